"""A TensorFlow Lite model run by XNNPACK: its input sized once, its threads set once, one caller at a time."""

from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf

from hxhbot.engine.model_dir import ModelError

VIEWS_PER_INVOKE = 1  # never pads a picture's 1-4 views; larger batches were not consistently faster (bench_engine)


class LiteInterpreter:
    """Run a float32 TensorFlow Lite embedding model on `(n, size, size, 3)` arrays, `batch` views an invoke."""

    def __init__(self, content: bytes, input_size: int, threads: int, batch: int = VIEWS_PER_INVOKE) -> None:
        try:
            self._interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads)
            self._input = self._interpreter.get_input_details()[0]["index"]
            self._output = self._interpreter.get_output_details()[0]["index"]
            self._interpreter.resize_tensor_input(self._input, [batch, input_size, input_size, 3], strict=True)
            self._interpreter.allocate_tensors()  # resizing later would re-plan XNNPACK's graph: never done
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"the TensorFlow Lite model cannot be run at {input_size} px: {error}") from error
        self.batch = batch
        self.dim = int(self._interpreter.get_output_details()[0]["shape"][-1])
        self._lock = threading.Lock()  # an interpreter is not thread-safe: the bot's model thread and index builds

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """The model's `(n, dim)` outputs for `images`, `batch` at a time (the last batch padded with blanks)."""
        outputs = []
        with self._lock:
            for start in range(0, len(images), self.batch):
                chunk = np.ascontiguousarray(images[start : start + self.batch], dtype=np.float32)
                count = len(chunk)
                if count < self.batch:
                    chunk = np.concatenate([chunk, np.zeros((self.batch - count, *chunk.shape[1:]), np.float32)])
                self._interpreter.set_tensor(self._input, chunk)
                self._interpreter.invoke()
                outputs.append(self._interpreter.get_tensor(self._output)[:count])
        return np.concatenate(outputs) if outputs else np.zeros((0, self.dim), np.float32)
