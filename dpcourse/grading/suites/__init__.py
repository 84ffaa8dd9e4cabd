"""One module per graded exercise: ``exNN.py`` defines ``SUITE`` (see ``dpcourse.grading``'s docstring)."""
