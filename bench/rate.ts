/**
 * An open-loop load generator at a fixed offered rate: requests are sent on schedule whether or not the
 * earlier ones have answered, and each latency is measured from its scheduled send time (so a server that
 * falls behind shows it, no coordinated omission). autocannon's `overallRate` mode reports latencies below
 * the upstream's own fixed delay on this machine, so the fixed-rate scenarios use this instead.
 */
import { Pool } from 'undici';

export interface RateSample {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

export async function fixedRate(
  url: string,
  headers: Record<string, string>,
  body: string,
  rps: number,
  durationS: number,
): Promise<RateSample> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: Math.max(64, Math.ceil(rps / 5)), pipelining: 1 });
  const lat: number[] = [];
  let errors = 0;
  const pending: Array<Promise<void>> = [];
  const t0 = performance.now();
  const total = Math.round(rps * durationS);
  const one = async (scheduled: number) => {
    try {
      const r = await pool.request({ method: 'POST', path: u.pathname + u.search, headers, body });
      await r.body.text();
      if (r.statusCode >= 400) errors++;
      else lat.push(performance.now() - scheduled);
    } catch {
      errors++;
    }
  };
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor(((now - t0) / 1000) * rps));
      for (; sent < due; sent++) pending.push(one(t0 + (sent * 1000) / rps));
      if (sent >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(pending);
  const elapsed = (performance.now() - t0) / 1000;
  await pool.close();
  lat.sort((a, b) => a - b);
  const pct = (p: number) =>
    lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! * 10) / 10 : 0;
  return { rps: lat.length / elapsed, p50: pct(0.5), p99: pct(0.99), errors };
}
