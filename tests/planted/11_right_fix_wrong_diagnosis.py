# exercise: 11
# expect: hang: the diagnosis names the rank(s) and the operation and its sequence number; divergence: the diagnosis names the rank(s) and the first step and the first parameter where the ranks split; averaging: the diagnosis names the family
# base: 11_good.py
# visible: no (diagnoses are graded by hidden tests only: a visible check would let a learner guess until it passes)
# Wrong: the fixes are right, but three diagnoses are not: the hang's sequence number is the flight
# recorder's (counted from 1) given as DETAIL's "seq"; the divergence names only the rank printed
# last; and the double averaging is called a divergence because the parameters were wrong.
<<<
        2: {"family": "averaging", "ranks": "all", "parameter": "2.weight"},
        3: {"family": "divergence", "ranks": [1, 2], "step": 4, "parameter": "0.weight"},
===
        2: {"family": "divergence", "ranks": "all", "parameter": "2.weight"},
        3: {"family": "divergence", "ranks": [2], "step": 4, "parameter": "0.weight"},
>>>
<<<
        5: {"family": "hang", "ranks": [2], "op": "ALLREDUCE", "seq": 10},
===
        5: {"family": "hang", "ranks": [2], "op": "ALLREDUCE", "seq": 11},
>>>
