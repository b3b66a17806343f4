"""txn.sim: whole-stack simulation and history checkers (the top of txn/)."""
