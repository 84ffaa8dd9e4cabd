# %% [markdown]
# # Lesson 06b (optional) — The same idea in TensorFlow: `MirroredStrategy`
#
# Data parallelism is not a PyTorch invention. TensorFlow's answer for one machine with several
# devices is `tf.distribute.MirroredStrategy`: it **mirrors** every variable onto each device, runs
# one replica of the step per device on its slice of the global batch, and **all-reduces** the
# gradients before every replica applies the same update.
#
# **The question:** does a Keras model trained with 4 replicas end with the same weights as with 1,
# as the math says it should — and how does this design sit next to `DataParallel` and DDP?
#
# This lesson needs the optional extra: `pip install -e ".[tensorflow]"` (CPU-only TensorFlow,
# about 1.6 GB). We have no GPUs here, so we split the CPU into 4 **logical devices**; with GPUs,
# `MirroredStrategy()` picks them all up by itself.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the notebook
try:
    import tensorflow as tf
except ImportError:
    raise ImportError("lesson 06b needs TensorFlow: pip install -e \".[tensorflow]\" (or pip install tensorflow-cpu)") from None

tf.get_logger().setLevel("ERROR")  # the strategy logs every all-reduce it builds at INFO level
REPLICAS = 4
# Logical devices must be configured before TensorFlow runs anything.
gpus = tf.config.list_physical_devices("GPU")
if not gpus:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
DEVICES = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")][:REPLICAS]
print(f"TensorFlow {tf.__version__}; devices for the replicas: {DEVICES}")
print(f"CPU cores: {os.cpu_count()} - 4 replicas on 2 cores are oversubscribed: expect no speedup here")

# %%
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

from dpcourse.data import load_digits

GLOBAL_BATCH = 64   # split into 64 / replicas per device
EPOCHS = 2          # the first epoch builds the graph and is not timed
images, labels = load_digits()
keep = len(labels) - len(labels) % GLOBAL_BATCH  # whole batches only: a short last batch splits unevenly
x_all = images.reshape(len(labels), 64).numpy()[:keep]
y_all = labels.numpy()[:keep]
print(f"{len(y_all)} of {len(labels)} digits, global batch {GLOBAL_BATCH}, {EPOCHS} epochs")

# %% [markdown]
# ## One model, built inside a strategy's scope
#
# Variables created inside `strategy.scope()` become *mirrored* variables: one copy per device, kept
# equal. To compare runs fairly we build the model once, remember its initial weights, and load
# those same weights into every run. The data are not shuffled, so every run sees the same global
# batches in the same order, and we keep whole batches only: the strategy weights every replica's
# mean loss equally, which is only the global mean when every replica got the same number of samples.

# %%
def build_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="tanh"),
                              keras.layers.Dense(10)])
    return model


INITIAL = build_model().get_weights()


def train(strategy):
    """Train from INITIAL under ``strategy``; return the final weights and the seconds per epoch."""
    with strategy.scope():
        model = build_model()
        model.set_weights(INITIAL)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((x_all, y_all)).batch(GLOBAL_BATCH)
    model.fit(data, epochs=1, verbose=0, shuffle=False)  # the first epoch also builds the graph: don't time it
    start = time.perf_counter()
    history = model.fit(data, epochs=EPOCHS - 1, verbose=0, shuffle=False)
    seconds = (time.perf_counter() - start) / (EPOCHS - 1)
    return model.get_weights(), seconds, history.history["loss"][-1]


one = tf.distribute.MirroredStrategy(DEVICES[:1])
many = tf.distribute.MirroredStrategy(DEVICES)
print("replicas in sync:", one.num_replicas_in_sync, "and", many.num_replicas_in_sync)
weights_1, seconds_1, loss_1 = train(one)
weights_n, seconds_n, loss_n = train(many)
print(f"1 replica : {seconds_1:.2f} s per epoch, final loss {loss_1:.4f}")
print(f"{REPLICAS} replicas: {seconds_n:.2f} s per epoch, final loss {loss_n:.4f}")

# %% [markdown]
# ## Same weights?
#
# Each replica computes the mean loss of its 16 samples; the strategy scales each replica's loss by
# 1/4 and **sums** the gradients across replicas (an all-reduce), which gives the gradient of the
# mean over all 64. Every replica then applies the same update to its copy. So the 4-replica run must
# end where the 1-replica run ends, up to float32 rounding of a different summation order.

# %%
# NBVAL_CHECK_OUTPUT
difference = max(float(np.abs(a - b).max()) for a, b in zip(weights_1, weights_n))
moved = max(float(np.abs(a - b).max()) for a, b in zip(weights_1, INITIAL))
assert difference < 1e-4 and moved > 1e-2, (difference, moved)
print(f"weights moved by up to {'more than 1e-2' if moved > 1e-2 else moved}; "
      f"1 vs {REPLICAS} replicas agree within 1e-4: OK")

# %%
print(f"measured max |difference| = {difference:.1e}")
plt.figure(figsize=(5, 3))
plt.bar([f"1 replica", f"{REPLICAS} replicas"], [seconds_1, seconds_n])
plt.ylabel("seconds per epoch (this machine)")
plt.title(f"MirroredStrategy on {len(DEVICES)} {'GPUs' if gpus else 'logical CPU devices'}")
plt.show()

# %% [markdown]
# **What to look for in the timing:** 4 logical CPU devices share this machine's cores, so the 4
# replicas do the same arithmetic plus the all-reduce and the coordination of 4 replicas: expect
# them to be slower than 1, not faster. On 4 real GPUs, with a model big enough to keep them busy,
# the same code approaches 4× the throughput of one.
#
# ## Three designs side by side
#
# | | TF `MirroredStrategy` | PyTorch `nn.DataParallel` | PyTorch DDP |
# |---|---|---|---|
# | processes | one | one | one per device |
# | replicas run as | one traced graph, per-device ops | Python threads (GIL) | separate processes |
# | model copies | mirrored variables, made once | re-made every step | made once |
# | gradient combination | all-reduce (NCCL on GPUs) | reduce-add onto device 0 | bucketed all-reduce, overlapping backward |
# | optimizer | runs on every replica | runs once, on device 0 | runs on every rank |
# | data split | `strategy` splits each global batch | `scatter` splits each batch | a `DistributedSampler` per rank |
# | several machines | no (`MultiWorkerMirroredStrategy` does) | no | yes |
#
# `MirroredStrategy` sits between the two PyTorch designs: one process like `DataParallel`, but no
# GIL in the way (the step is a compiled graph whose per-device parts run in parallel), no
# re-replication (variables stay mirrored) and a real all-reduce like DDP.
#
# ## Check yourself

# %%
# NBVAL_CHECK_OUTPUT
assert many.num_replicas_in_sync == REPLICAS and one.num_replicas_in_sync == 1
assert difference < 1e-4, "1 and N replicas must reach the same weights"
print("lesson 06b checks passed")

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids

lesson_aids("06b")
