"""A sweep's end: its jobs on disk (rundirs), their summary (summary), its exit (finish)."""
