"""Load on `awrs serve`: concurrent clients with short and long requests, as a Markdown table.

    .venv/bin/python bench/serve_load.py                     # 50 clients: 40 short, 10 long
    .venv/bin/python bench/serve_load.py --clients 20 --long 5 --particles 2

Starts the server in-process on the embedded model (llama.cpp when installed), measures each
kind of request alone first (its solo latency), then sends every client's request at once,
arrivals spread over ``--spread`` seconds (seeded). Each request streams with
``awrs_events``; time to first token is the time to its first event, which the server sends
after the request's first SMC step (its first token drawn). Prints throughput (particle-tokens
and requests per second), p50 and p99 latency and time to first token per kind, and the short
requests' p99 against their solo latency.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

import httpx

PATTERN = "[a-z][a-z ,]{1,400}"


def one_request(url: str, max_tokens: int, particles: int, seed: int) -> dict:
    body = {"prompt": "Describe the weather today.", "guided_regex": PATTERN, "max_tokens": max_tokens,
            "particles": particles, "seed": seed, "stream": True, "stream_options": {"awrs_events": True}}
    started = time.perf_counter()
    first = None
    ext = None
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: "):
                continue
            if first is None:
                first = time.perf_counter() - started
            data = line[len("data: "):]
            if data != "[DONE]":
                chunk = json.loads(data)
                ext = chunk.get("awrs") or ext
    total = time.perf_counter() - started
    tokens = ext["stats"]["tokens"] if ext else 0
    return {"latency": total, "ttft": first or total, "tokens": tokens}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_load(url: str, *, clients: int, long: int, short_tokens: int, long_tokens: int, particles: int,
             spread: float, seed: int) -> dict:
    rng = random.Random(seed)
    kinds = ["long"] * long + ["short"] * (clients - long)
    rng.shuffle(kinds)
    delays = sorted(rng.uniform(0, spread) for _ in kinds)
    results: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        time.sleep(delays[k])
        tokens = long_tokens if kinds[k] == "long" else short_tokens
        out = one_request(url, tokens, particles, seed + k)
        with lock:
            results.append((kinds[k], out))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    out = {"wall_s": wall, "requests_per_s": clients / wall,
           "particle_tokens_per_s": sum(r["tokens"] for _, r in results) / wall}
    for kind in ("short", "long"):
        rows = [r for k, r in results if k == kind]
        if rows:
            lat = [r["latency"] for r in rows]
            ttft = [r["ttft"] for r in rows]
            out[kind] = {"n": len(rows), "p50": statistics.median(lat), "p99": percentile(lat, 0.99),
                         "ttft_p50": statistics.median(ttft), "ttft_p99": percentile(ttft, 0.99)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--long", type=int, default=10, help="how many of the clients send long requests")
    parser.add_argument("--short-tokens", type=int, default=8)
    parser.add_argument("--long-tokens", type=int, default=128)
    parser.add_argument("--particles", type=int, default=2)
    parser.add_argument("--spread", type=float, default=2.0, help="arrivals spread over this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="", help="a name for this run in the table")
    args = parser.parse_args()

    import awrs
    from awrs.server import create_app
    from awrs.server.testing import LiveServer

    rows = args.clients * args.particles
    try:  # llama.cpp: room for every client's rows at once
        model = awrs.load_model(n_seq_max=min(255, rows))
    except awrs.ConfigError:  # transformers: no fixed row limit
        model = awrs.load_model()
    limits = {"max_tokens": max(args.long_tokens, args.short_tokens), "max_particles": args.particles,
              "max_batch_particles": args.clients * args.particles, "max_seconds": 600.0}
    with LiveServer(create_app(model, limits=limits)) as live:
        one_request(live.url, 4, args.particles, 999)  # warm up: prompt cache, first allocations
        solo_short = statistics.median(one_request(live.url, args.short_tokens, args.particles, s)["latency"]
                                       for s in range(3))
        solo_long = one_request(live.url, args.long_tokens, args.particles, 0)["latency"]
        load = run_load(live.url, clients=args.clients, long=args.long, short_tokens=args.short_tokens,
                        long_tokens=args.long_tokens, particles=args.particles, spread=args.spread, seed=args.seed)
    s, lg = load["short"], load["long"]
    print(f"\n{args.clients} clients ({args.clients - args.long} short: {args.short_tokens} tokens, "
          f"{args.long} long: {args.long_tokens} tokens), {args.particles} particles each, arrivals over "
          f"{args.spread:g} s, {model.backend} backend {args.label}\n")
    print("| run | particle-tokens/s | requests/s | short p50 / p99 (s) | short TTFT p50 / p99 (s) "
          "| long p50 / p99 (s) | short solo (s) | short p99 / solo |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.label or 'this'} | {load['particle_tokens_per_s']:.1f} | {load['requests_per_s']:.2f} "
          f"| {s['p50']:.2f} / {s['p99']:.2f} | {s['ttft_p50']:.2f} / {s['ttft_p99']:.2f} "
          f"| {lg['p50']:.1f} / {lg['p99']:.1f} | {solo_short:.2f} | {s['p99'] / solo_short:.1f}x |")
    print(json.dumps({"solo_short_s": solo_short, "solo_long_s": solo_long, **load}))


if __name__ == "__main__":
    main()
