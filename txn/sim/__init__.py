"""Pure checkers of simulated and recorded histories: the judges behind `chronodb verify`."""
