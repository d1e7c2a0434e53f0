"""The record of uploads: one record per CSV upload, with exact per-row counts.

The producer creates a record when an upload starts and publishes its rows;
workers report what became of each row on the `autoscaler.outcomes` queue; the
tracker (a thread of the producer) applies those reports to the store. Every
other component reads the record over HTTP, never the store's tables.
"""
