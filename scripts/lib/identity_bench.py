"""Helpers for scripts/identity-cost.sh (run with /usr/bin/python3: it needs PyJWT and
cryptography). Every address is 127.0.0.1.

  identity_bench.py keys DIR COUNT CACHED   RSA 2048 and EC P-256 keys made in memory (the
      private keys are never written), DIR/jwks.json with both public keys, and for each
      algorithm DIR/{rs256,es256}-{cached,fresh}.txt: CACHED and COUNT distinct tokens with
      sub/iss/aud/exp, one per line.
  identity_bench.py config IN OUT MODE DIR [METRICS_PORT]   rewrites the load tests' gateway
      config for a case (see CASES in the shell script).
  identity_bench.py check MODE PORT METRICS_PORT DIR   sends requests that show the case's
      config decides by the source it claims to (exit 1 if not); for assign it also keeps the
      1,000 visitor ids it was given in DIR/vids-MODE.txt.
  identity_bench.py send PORT FILE HEADER PREFIX   one request per line of FILE with
      HEADER: PREFIX<line>, one connection (fills the token cache before a cached run).
  identity_bench.py counts METRICS_PORT   gateway_identity_total by source (the non-zero ones).
"""
import http.client
import json
import re
import sys
import time

ISSUER = "https://auth.bench.test"
AUDIENCE = "web"
SIGNING_KEY = "identity-cost-bench-key-0123456789"


def user(i):
    """The load tests' users: every 10th a VIP."""
    return f"vip-{i}" if i % 10 == 0 else f"user-{i}"


def keys(out, count, cached):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = []
    for kid, alg, key, algo in [("rs-1", "RS256", rsa_key, RSAAlgorithm),
                                ("es-1", "ES256", ec_key, ECAlgorithm)]:
        jwk = json.loads(algo.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        jwks.append(jwk)
    with open(f"{out}/jwks.json", "w") as f:
        json.dump({"keys": jwks}, f)
    exp = int(time.time()) + 4 * 3600
    for kid, alg, key in [("rs-1", "RS256", rsa_key), ("es-1", "ES256", ec_key)]:
        for name, n in [("cached", cached), ("fresh", count)]:
            with open(f"{out}/{alg.lower()}-{name}.txt", "w") as f:
                for i in range(n):
                    # jti makes every token distinct even where the sub repeats.
                    claims = {"sub": user(i % 1000 + 1), "iss": ISSUER, "aud": AUDIENCE,
                              "exp": exp, "jti": f"{name}-{i}"}
                    f.write(jwt.encode(claims, key, algorithm=alg, headers={"kid": kid}) + "\n")


def config(src, dst, mode, out, metrics_port=None):
    text = open(src).read()
    cookie = "    cookie: canary_user\n"
    assert cookie in text, "the load tests' config no longer has `cookie: canary_user`"
    identity = None
    extra_rule = None
    if mode.startswith("assign"):
        identity = "      - cookie: canary_user\n      - assign: { cookie: canary_vid }\n"
        if mode.endswith("-signed"):
            identity += f"    signing_key: \"{SIGNING_KEY}\"\n"
    elif mode == "jwt":
        identity = ("      - cookie: canary_user\n"
                    "      - jwt:\n"
                    f"          keys_file: {out}/jwks.json\n"
                    "          algorithms: [RS256, ES256]\n"
                    f"          issuer: {ISSUER}\n"
                    f"          audience: {AUDIENCE}\n")
    elif mode == "regex":
        extra_rule = ("      - name: app-v5\n"
                      "        when: { header: { name: x-app-version, matches: \"^5\\\\.\" } }\n"
                      "        group: canary\n")
    elif mode != "cookie":
        sys.exit(f"unknown mode {mode}")
    if identity:
        text = text.replace(cookie, "    identity:\n" + identity)
    if extra_rule:
        # After the QA header rule, before the VIP list: every request evaluates the regex.
        anchor = "      - name: vip\n"
        text = text.replace(anchor, extra_rule + anchor)
    if metrics_port:
        text = text.rstrip("\n") + f"\n  metrics: {{ listen: \"127.0.0.1:{metrics_port}\" }}\n"
    open(dst, "w").write(text)


def get(conn, headers):
    conn.request("GET", "/", headers=headers)
    r = conn.getresponse()
    r.read()
    return r.getheader("x-canary-group"), r.getheader("set-cookie"), r.status


def identity_counts(metrics_port):
    c = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    counts = {}
    for m in re.finditer(r'^gateway_identity_total\{[^}]*source="([a-z_]+)"[^}]*\} (\d+)', body, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
    return counts


def check(mode, port, metrics_port, out):
    import jwt
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    fail = []
    before = identity_counts(metrics_port)
    if mode == "jwt":
        for alg in ["rs256", "es256"]:
            tokens = [l.strip() for l in open(f"{out}/{alg}-cached.txt")][:200]
            canary = 0
            for t in tokens:
                sub = jwt.decode(t, options={"verify_signature": False})["sub"]
                by_token, _, s1 = get(c, {"Authorization": "Bearer " + t})
                by_cookie, _, s2 = get(c, {"Cookie": "canary_user=" + sub})
                if (s1, s2) != (200, 200) or by_token != by_cookie:
                    fail.append(f"{alg} token of {sub}: {by_token} ({s1}), cookie: {by_cookie} ({s2})")
                canary += by_token == "canary"
            if canary == 0:
                fail.append(f"{alg}: no token went to canary (tokens ignored?)")
            print(f"check {alg}: 200 tokens route as their sub's cookie does ({canary} to canary)")
            # A bad signature: the same claims, the signature's first character changed.
            head, body, sig = tokens[0].split(".")
            bad = ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
            get(c, {"Authorization": "Bearer " + bad})
        after = identity_counts(metrics_port)
        d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        if d.get("jwt") != 400 or d.get("jwt_invalid") != 2:
            fail.append(f"identity counters moved by {d}; expected jwt 400, jwt_invalid 2")
    elif mode.startswith("assign"):
        ids, groups = [], {}
        for _ in range(1000):
            g, sc, s = get(c, {})
            m = re.match(r"canary_vid=([^;]+)", sc or "")
            if s != 200 or not m:
                fail.append(f"no visitor cookie: {s} {sc}")
                break
            ids.append(m.group(1))
            groups[m.group(1)] = g
        with open(f"{out}/vids-{mode}.txt", "w") as f:
            f.write("".join(v + "\n" for v in ids))
        for v in ids[:200]:
            g, sc, s = get(c, {"Cookie": "canary_vid=" + v})
            if s != 200 or sc or g != groups[v]:
                fail.append(f"returning visitor {v}: {s} set-cookie {sc} group {g}, first {groups[v]}")
        share = sum(g == "canary" for g in groups.values()) / max(len(groups), 1)
        print(f"check {mode}: {len(ids)} new visitors got a cookie ({share:.1%} canary); "
              f"200 came back with it, kept their group, got no Set-Cookie")
        if mode.endswith("-signed") and ids and "." not in ids[0]:
            fail.append(f"signed config handed out an unsigned id {ids[0]}")
        after = identity_counts(metrics_port)
        d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        if d.get("assigned_new") != 1000 or d.get("assigned") != 200:
            fail.append(f"identity counters moved by {d}; expected assigned_new 1000, assigned 200")
    elif mode == "regex":
        g5, _, _ = get(c, {"Cookie": "canary_user=vip-10", "x-app-version": "5.2.1"})
        g4, _, _ = get(c, {"Cookie": "canary_user=vip-10", "x-app-version": "4.5.2"})
        if (g5, g4) != ("canary", "stable"):
            fail.append(f"VIP with app 5.x went to {g5}, with 4.x to {g4}; expected canary, stable")
        print("check regex: a VIP with x-app-version 5.x goes to canary, with 4.x to stable")
    for f in fail[:10]:
        print("CHECK FAILED:", f, file=sys.stderr)
    sys.exit(1 if fail else 0)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "keys":
        keys(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "config":
        config(*sys.argv[2:6], *(sys.argv[6:7]))
    elif cmd == "check":
        check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif cmd == "send":
        c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]), timeout=60)
        for line in open(sys.argv[3]):
            get(c, {sys.argv[4]: sys.argv[5] + line.strip()})
    elif cmd == "counts":
        counts = identity_counts(int(sys.argv[2]))
        print(" ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "-")
    else:
        sys.exit(f"unknown command {cmd}")
