"""keras_vtn: efficient video transformers for Keras 3.

```python
import keras_vtn
model = keras_vtn.ViViT(variant="factorised_encoder", weights=None, num_frames=8, image_size=32)
```
"""

from keras_vtn import layers, weights
from keras_vtn.models.laps import LAPSTransformer
from keras_vtn.models.linear_vtn import LinearVTN
from keras_vtn.models.vivit import ViViT
from keras_vtn.models.vtn import VTN

__version__ = "0.1.0"

__all__ = ["LAPSTransformer", "LinearVTN", "VTN", "ViViT", "layers", "weights", "__version__"]
