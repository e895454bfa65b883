"""Outbound notifications: channels and their rules, the outbox of deliveries, the sender.

A change that matches a channel's rule writes a delivery row in the transaction of its
event (outbox.py), so a delivery exists exactly when its change committed. The sender,
in a process of its own beside the workers (sender.py, started by ../notifier.py),
claims due rows with a lease, posts them (webhooks, Slack, Telegram) and records each
attempt. See docs/design/notifications.md.
"""
