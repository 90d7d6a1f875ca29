"""Customer data coming in: webhook events and their rules, custom event types, bulk imports."""
