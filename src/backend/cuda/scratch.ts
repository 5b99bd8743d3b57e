/** Device scratch buffers that grow to the largest request, shared by every layer of a device. */
import { CudaDevice, DeviceBuffer } from "./device.js";

/** Scratch that grows to the largest request and is shared by every layer of a device. */
export class Scratch {
  private buf?: DeviceBuffer;
  constructor(private readonly dev: CudaDevice) {}
  get(bytes: number, zero = false): DeviceBuffer {
    if (!this.buf || this.buf.bytes < bytes) {
      if (this.buf) {
        this.dev.synchronize();
        this.dev.free(this.buf);
      }
      this.buf = this.dev.alloc(Math.max(bytes, 4096));
      if (zero) this.dev.fill32(this.buf, 0);
    }
    return this.buf;
  }
}

const scratch = new WeakMap<CudaDevice, { ws: Scratch; counters: Scratch; act: Scratch; dense: Scratch }>();
export function scratchOf(dev: CudaDevice) {
  let s = scratch.get(dev);
  if (!s)
    scratch.set(
      dev,
      (s = {
        ws: new Scratch(dev),
        counters: new Scratch(dev),
        act: new Scratch(dev),
        dense: new Scratch(dev),
      }),
    );
  return s;
}
