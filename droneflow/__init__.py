"""The droneflow command line: one process (`serve`) or one service per process."""
