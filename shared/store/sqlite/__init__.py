"""SQLiteTaskStore: the TaskStore in one SQLite file, for embedded mode and for several processes
on one machine (WAL mode, so readers never wait for the writer).

One worker thread owns the connection and runs every statement. Calls made while it is busy
queue up, and the next batch runs them all in one transaction (group commit): a commit costs
the same for one call as for five hundred, and that is what makes thousands of tasks a second
possible. Each call is its own function of (connection, now); one that fails gets its own error
and the rest of its batch still commits. Futures are settled only after COMMIT, so a caller
never acts on a write that could still be rolled back.

Every transition is one conditional `UPDATE … RETURNING` (SQLite ≥ 3.35), so it is atomic even
when other processes write to the same file: BEGIN IMMEDIATE serialises the writers.

    schema.py   the tables, their indexes and every SQL statement, its status terms derived
                from shared.lifecycle
    jobs.py     one function of (connection, now, *args) per store call, run by the worker
    worker.py   the thread that owns the connection: batches, transactions, checkpoints
    store.py    SQLiteTaskStore, the adapter: queues each call as a job
"""

from shared.store.sqlite.store import SQLiteTaskStore

__all__ = ["SQLiteTaskStore"]
