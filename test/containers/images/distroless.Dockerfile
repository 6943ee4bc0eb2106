# Test stand-in for gcr.io/distroless/static-debian12:nonroot: no shell, no package manager; the CA bundle,
# time zones, and the nonroot user (65532) with its home, taken from the local Debian base.
FROM docker.io/library/debian:bookworm-slim AS files
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tzdata && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /out/etc/ssl/certs /out/usr/share /out/tmp /out/home/nonroot \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && cp -a /usr/share/zoneinfo /out/usr/share/ \
 && cp /etc/os-release /etc/nsswitch.conf /out/etc/ \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/etc/passwd \
 && printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > /out/etc/group \
 && chmod 1777 /out/tmp && chown 65532:65532 /out/home/nonroot && chmod 0700 /out/home/nonroot

FROM scratch
COPY --from=files /out/ /
USER 65532:65532
WORKDIR /home/nonroot
ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
