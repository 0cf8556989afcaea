"""napari dock widgets: thin faces that collect inputs, start work in workers, show results."""
