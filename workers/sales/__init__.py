"""The `sales` job type: sample rows (Date, Item Description, Quantity, Amount)."""
