"""The forms a checkpoint comes in besides Google's npz (``checkpoints.py``): released
names and their downloads (`released`), timm's safetensors state dicts (`timm`) and
`hf-hub:` names (`hub`). Each maps its form onto the official layout."""
