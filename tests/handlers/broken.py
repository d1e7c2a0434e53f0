"""A handler module that fails to import, to test that workers refuse it clearly."""

raise ImportError("this handler is broken on purpose")
