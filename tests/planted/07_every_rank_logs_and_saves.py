# exercise: 07
# expect: only rank 0 prints; rank 0 writes the checkpoint, every rank loads it
# names: every rank prints
# base: 07_good.py
# Wrong: the rank-0 guard is gone, so every rank prints and every rank writes the same file.
<<<
        if rank == 0:
            print(f"epoch {epoch}: mean micro-batch loss on rank 0 {total / (i + 1):.4f}")
===
        if True:
            print(f"epoch {epoch}: mean micro-batch loss on rank 0 {total / (i + 1):.4f}")
>>>
