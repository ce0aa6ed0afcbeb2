from base.base_data_loader import BaseDataLoader
from base.base_model import BaseModel
from base.base_trainer import BaseTrainer
from base.epoch_loader import EpochLoader
from base.hook import Hook, StopTraining
from base.tensor_data_loader import TensorDataLoader

__all__ = [
    "BaseDataLoader",
    "BaseModel",
    "BaseTrainer",
    "EpochLoader",
    "Hook",
    "StopTraining",
    "TensorDataLoader",
]
