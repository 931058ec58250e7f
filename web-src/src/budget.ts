/**
 * A client-side count of a moving-window rate limit (docs/api.md: at most N hits in any span of
 * the window), so the page stays within the server's limits instead of collecting 429s.
 */
export class Budget {
  private readonly hits: { at: number; count: number }[] = [];

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}

  private prune(now: number): void {
    while (this.hits.length > 0 && now - this.hits[0]!.at >= this.windowMs) this.hits.shift();
  }

  /** How many hits may be spent now. */
  available(now = Date.now()): number {
    this.prune(now);
    return this.limit - this.hits.reduce((sum, hit) => sum + hit.count, 0);
  }

  spend(count = 1, now = Date.now()): void {
    this.hits.push({ at: now, count });
  }

  /** Milliseconds until at least one more hit is available. */
  waitMs(now = Date.now()): number {
    this.prune(now);
    if (this.available(now) > 0 || this.hits.length === 0) return 0;
    return this.windowMs - (now - this.hits[0]!.at) + 50;
  }

  /** After a 429: nothing more until `seconds` have passed. */
  exhaust(seconds: number, now = Date.now()): void {
    this.hits.length = 0;
    this.hits.push({ at: now - this.windowMs + seconds * 1000, count: this.limit });
  }
}
