# exercise: 05
# expect: full
# base: ../../dpcourse/ddp.py
# The course's own implementation (dpcourse/ddp.py as it is now), pasted as the learner's code.
