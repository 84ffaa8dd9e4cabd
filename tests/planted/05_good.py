# exercise: 05
# expect: full
# base: ../../dpcourse/ddp_by_hand.py
# The course's own implementation (dpcourse/ddp_by_hand.py as it is now), pasted as the learner's code.
