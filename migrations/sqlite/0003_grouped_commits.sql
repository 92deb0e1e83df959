-- Grouped commits exist on PostgreSQL only (SQLite has one writer); nothing to do here.
SELECT 1;
