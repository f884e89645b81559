"""TLS to the cluster with a private CA (`--es-ca-cert`) and a client certificate
(`--es-client-cert`/`--es-client-key`): a TLS-terminating proxy in front of the
search server demands a client certificate from our own CA. And HEC behind a
certificate of a private CA (`--hec-ca-cert`), and a Redis dedup ledger over TLS
(`rediss://`)."""
import ssl
import subprocess

import pytest

from harness import ok, redis_server
from hec_receiver import HecReceiver
from test_metrics import Recorder, put_dual_write


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256."""
    d = tmp_path / "pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=drsink test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def server_context(pki):
    """A TLS server context with the server certificate of `pki`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    return context


@pytest.fixture
def tls_proxy(search, pki):
    proxy = Recorder(search.url)
    context = server_context(pki)
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    proxy.server.socket = context.wrap_socket(proxy.server.socket, server_side=True)
    with proxy:
        yield proxy, proxy.url.replace("http://", "https://")


def test_private_ca_and_client_certificate(aws, pipeline, search, run_worker, pki, tls_proxy):
    proxy, url = tls_proxy
    records = put_dual_write(aws, pipeline)
    summary = ok(run_worker(pipeline.queue_url, "--es-ca-cert", str(pki / "ca.pem"),
                            "--es-client-cert", str(pki / "client.pem"),
                            "--es-client-key", str(pki / "client.key"), es_url=url))
    assert summary["records"] == records
    assert len(search.count_by_log_id()) == 10
    assert set(search.count_by_log_id().values()) == {1}
    assert proxy.bulk_requests(), "the bulk requests went through the TLS proxy"
    assert aws.queue_depth(pipeline.queue_url) == 0


@pytest.mark.parametrize("missing", ["ca", "client-certificate"])
def test_untrusted_or_unauthenticated_tls_fails_at_start(missing, aws, pipeline, run_worker, pki, tls_proxy):
    _, url = tls_proxy
    args = {"ca": ["--es-client-cert", str(pki / "client.pem"), "--es-client-key", str(pki / "client.key")],
            "client-certificate": ["--es-ca-cert", str(pki / "ca.pem")]}[missing]
    rc, _, err, _ = run_worker(pipeline.queue_url, *args, es_url=url)
    assert rc != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the sink is not usable"), err[-2000:]
    if missing == "client-certificate":
        # TLS 1.3 rejects a missing client certificate after the handshake, so the
        # client may see a certificate alert or only a closed connection: the hint
        # names the flags either way.
        assert "--es-client-cert" in last, last
    else:
        assert "certificate" in last.lower() or "handshake" in last.lower() or "tls" in last.lower(), last
    assert "panicked" not in err
    assert aws.queue_depth(pipeline.queue_url) == 2  # moto's test events, untouched


def test_hec_with_a_private_ca(aws, pipeline, pki, run_drsink, hec_args):
    """Splunk's HEC usually has a certificate of Splunk's own or a company CA: without
    --hec-ca-cert the start check fails on the certificate and nothing is consumed;
    with it every event arrives once."""
    token = "00000000-1111-2222-3333-444444444444"
    with HecReceiver(token=token, tls=server_context(pki)) as hec:
        assert hec.url.startswith("https://")
        records = put_dual_write(aws, pipeline)
        env = {"DRSINK_HEC_TOKEN": token}
        rc, _, err, _ = run_drsink(*hec_args(pipeline.queue_url, hec), env=env)
        last = err.strip().splitlines()[-1]
        assert rc != 0 and last.startswith("error: the sink is not usable"), err[-2000:]
        assert "certificate" in last.lower() or "tls" in last.lower(), last
        assert hec.counts() == {}
        summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec, "--hec-ca-cert", str(pki / "ca.pem")), env=env))
        assert summary["records"] == records
        assert len(hec.counts()) == 10 and set(hec.counts().values()) == {1}
        assert aws.queue_depth(pipeline.queue_url) == 0


def test_a_redis_ledger_over_tls(aws, pipeline, pki, run_drsink, hec_args, tmp_path):
    """ElastiCache with in-transit encryption, or any Redis behind TLS, is `rediss://`: the
    ledger's certificate is checked against the system's CAs (SSL_CERT_FILE names a private
    one). Untrusted, the worker stops at start; trusted, a replay of the same objects finds
    every log_id in the ledger."""
    tls = ["--tls-cert-file", str(pki / "server.pem"), "--tls-key-file", str(pki / "server.key"),
           "--tls-ca-cert-file", str(pki / "ca.pem"), "--tls-auth-clients", "no"]
    token = "00000000-1111-2222-3333-444444444444"
    with redis_server(tmp_path, tls) as port, HecReceiver(token=token) as hec:
        ledger = ["--dedup-ledger", f"rediss://127.0.0.1:{port}/0"]
        records = put_dual_write(aws, pipeline)
        rc, _, err, _ = run_drsink(*hec_args(pipeline.queue_url, hec, *ledger), env={"DRSINK_HEC_TOKEN": token})
        assert rc != 0 and "cannot connect to the dedup ledger at rediss://127.0.0.1" in err, err[-2000:]
        assert hec.counts() == {}
        env = {"DRSINK_HEC_TOKEN": token, "SSL_CERT_FILE": str(pki / "ca.pem")}
        first = ok(run_drsink(*hec_args(pipeline.queue_url, hec, *ledger), env=env))
        assert first["records"] == records and first["indexed"] == 10
        put_dual_write(aws, pipeline)
        again = ok(run_drsink(*hec_args(pipeline.queue_url, hec, *ledger), env=env))
        assert again["indexed"] == 0 and again["duplicates"] == records
        assert len(hec.counts()) == 10 and set(hec.counts().values()) == {1}
        assert aws.queue_depth(pipeline.queue_url) == 0
