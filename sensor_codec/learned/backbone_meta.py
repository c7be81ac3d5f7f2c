"""Constants of the segmentation backbone that torch-free code needs (class list, tap shape)."""

NUM_CLASSES = 11
IGNORE_INDEX = 11
CLASS_NAMES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
               "Car", "Pedestrian", "Bicyclist")
TAP_CHANNELS = 128
TAP_STRIDE = 8
