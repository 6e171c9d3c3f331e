"""What connects the plug-in to OmniSafe: its configs, fixes of OmniSafe's defects, more logging."""
