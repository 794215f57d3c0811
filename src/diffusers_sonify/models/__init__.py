from .audio_encoders import encode_audio_features
from .audio_projection import AudioProjectionModel

__all__ = ["AudioProjectionModel", "encode_audio_features"]
