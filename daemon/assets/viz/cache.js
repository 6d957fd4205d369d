// Bounded caches. `Lru` keeps at most `max` entries and calls `evict` on each one it
// drops, so entries that hold browser resources (object URLs, image bitmaps) are
// released as they leave: the page's memory stays bounded however far one scrolls.

export class Lru {
  constructor(max, evict = () => {}) {
    this.max = max;
    this.evict = evict;
    this.map = new Map();
  }

  get(key) {
    if (!this.map.has(key)) return undefined;
    const v = this.map.get(key);
    this.map.delete(key);
    this.map.set(key, v);
    return v;
  }

  has(key) {
    return this.map.has(key);
  }

  set(key, value) {
    if (this.map.has(key)) {
      const old = this.map.get(key);
      this.map.delete(key);
      if (old !== value) this.evict(old);
    }
    this.map.set(key, value);
    while (this.map.size > this.max) {
      const [k, v] = this.map.entries().next().value;
      this.map.delete(k);
      this.evict(v);
    }
  }

  delete(key) {
    if (!this.map.has(key)) return;
    const v = this.map.get(key);
    this.map.delete(key);
    this.evict(v);
  }

  clear() {
    for (const v of this.map.values()) this.evict(v);
    this.map.clear();
  }

  get size() {
    return this.map.size;
  }
}

/** An image entry: its object URL (for <img> and downloads) and decoded bitmap. */
export function imageCache(max) {
  return new Lru(max, (e) => {
    if (!e || e.pending) return;
    URL.revokeObjectURL(e.url);
    if (e.bitmap) e.bitmap.close();
  });
}
