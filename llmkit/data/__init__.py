"""The data box: sources → checked rows (`load`) → task-specific examples (`sft`, ...) → batches (`collate`)."""
