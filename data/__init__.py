"""Data (numpy only, both sides): datasets, the readers of user files and the Keras-cache loader."""
