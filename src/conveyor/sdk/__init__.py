"""The SDK: the application object, functions, run handles."""
