"""Similarity map tool: click the canvas (positive examples; Ctrl-click or right-click: negative ones), get a few-shot
score layer and the top-k most similar places; search by photo or location when the engine has them."""
