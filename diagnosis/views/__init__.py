"""Server-rendered pages; one module per area. Thin: selectors to read, services to write."""
