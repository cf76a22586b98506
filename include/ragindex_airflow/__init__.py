"""Airflow glue for ragindex: the Params form, the review operator and the task context → pipeline context.

Kept apart from the pure ``ragindex`` core (which imports no Airflow); heavy libraries are imported only
inside task bodies, so DAG files that import this package parse fast.
"""
