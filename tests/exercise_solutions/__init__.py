"""Reference solutions of the homework exercises, one module per exercise function.

The tests import them to show that each checker accepts a correct answer, and
tests/test_exercise_notebooks.py pastes each file's text into the notebook cell tagged
"solution" whose metadata names the exercise. They live here, outside the tinyattn package,
because students import tinyattn.
"""
