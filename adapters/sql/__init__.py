"""The SQL adapter: the only package that imports sqlite3 or psycopg."""
