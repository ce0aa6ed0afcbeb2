from base.base_data_loader import BaseDataLoader
from base.base_model import BaseModel
from base.base_trainer import BaseTrainer
from base.epoch_batches import EpochLoader
from base.hook import Hook
from base.tensor_data_loader import TensorDataLoader

__all__ = [
    "BaseDataLoader",
    "BaseModel",
    "BaseTrainer",
    "EpochLoader",
    "Hook",
    "TensorDataLoader",
]
