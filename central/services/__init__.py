"""The county's services, one module per noun."""
