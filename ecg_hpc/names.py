"""The names a user chooses from on the command line, without importing TensorFlow: networks, precision policies
and pretraining tasks. The modules that implement them take their names from here."""

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet18_2d")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
TASKS = ("beat", "rhythm", "hr", "future")
