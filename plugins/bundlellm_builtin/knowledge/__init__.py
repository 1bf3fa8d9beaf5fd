"""Built-in plugins of this stage of the data flow."""
