# ruff: noqa: E501 - test vectors keep one SIP line per source line where they can
"""SIP messages modelled on the RFC 4475 torture tests, written for ripp from the RFC's
descriptions of each case (section numbers in the names). ``VALID`` must parse; ``INVALID``
must raise ``SipParseError`` with the status code given. Line ends are CRLF on the wire;
here they are written with ``\\n`` and converted by :func:`wire`.
"""

from __future__ import annotations


def wire(text: str) -> bytes:
    """CRLF line ends everywhere; ``{len}`` in the head becomes the body's length."""
    head, sep, body = text.partition("\n\n")
    raw_body = body.replace("\n", "\r\n").encode("utf-8", "surrogateescape")
    head = head.replace("{len}", str(len(raw_body)))
    return head.replace("\n", "\r\n").encode() + (b"\r\n\r\n" + raw_body if sep else b"")


_SDP = "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\nt=0 0\nm=audio 49217 RTP/AVP 0 12\n"

VALID: dict[str, bytes] = {
    # 3.1.1.1: folded headers, odd spacing around colons, compact forms, unknown headers.
    "3.1.1.1-wsinv": wire(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
        "TO :\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
        'from   : "J Rosenberg \\\\\\"" <sip:jdrosen@example.com>\n  ;\n  tag = 98asjd8\n'
        "MaX-fOrWaRdS: 0068\nCall-ID: wsinv.ndaksdj@192.0.2.1\n"
        "Content-Length   : {len}\ncseq: 0009\n  INVITE\n"
        "Via  : SIP  /   2.0\n /UDP\n    192.0.2.2;branch=390skdjuw\n"
        "s :\nNewFangledHeader:   newfangled value\n continued newfangled value\n"
        "UnknownHeaderWithUnusualValue: ;;,,;;,;\nContent-Type: application/sdp\n"
        "Route:\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n  branch  =   z9hG4bK9ikj8  ,\n"
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n z9hG4bK30239\n"
        'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
        "      newvalue ;\n  secondparam ; q = 0.33\n\n"
        + "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\n"
        "t=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n"
    ),
    # 3.1.1.2: every token character in a method name, with a matching CSeq.
    "3.1.1.2-intmeth": wire(
        "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$"
        "/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\n"
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
        'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$'
        "/crazy?,/;;*@example.com>\n"
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
        '"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9"'
        ";tag=_token~1'+`*%!-.\n"
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
        "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\n"
        "Max-Forwards: 255\nextensionHeader-!.%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\n"
        "Content-Length: 0\n\n"
    ),
    # 3.1.1.3: %-escapes in the Request-URI and in header URIs.
    "3.1.1.3-esc01": wire(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\n"
        "To: sip:%75se%72@example.com\nFrom: <sip:I%20have%20spaces@example.net>;tag=938\n"
        "Max-Forwards: 87\ni: esc01.239409asdfakjkn23onasd0-3234\nCSeq: 234234 INVITE\n"
        "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\n"
        "C: application/sdp\nContact:\n  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\n"
        "Content-Length: {len}\n\n" + _SDP + "a=rtpmap:0 PCMU/8000\na=rtpmap:12 QCELP/8000\n"
    ),
    # 3.1.1.4: an escaped NUL in a URI user part.
    "3.1.1.4-escnull": wire(
        "REGISTER sip:example.com SIP/2.0\nTo: sip:null-%00-null@example.com\n"
        "From: sip:null-%00-null@example.com;tag=839923423\nMax-Forwards: 70\n"
        "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\nCSeq: 14398234 REGISTER\n"
        "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\n"
        "Contact: <sip:%00@host5.example.com>\nContact: <sip:%00%00@host5.example.com>\n"
        "L:0\n\n"
    ),
    # 3.1.1.5: a '%' that is not an escape, in the user part and in header values.
    "3.1.1.5-esc02": wire(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0\n"
        "To: \"%Z%45\" <sip:resource@example.com>\n"
        "From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23\n"
        "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf\n"
        "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234\n"
        "CSeq: 29344 RE%47IST%45R\nMax-Forwards: 70\n"
        "Contact: <sip:alias1@host1.example.com>\nC%6Fntact: <sip:alias2@host2.example.com>\n"
        "Contact: <sip:alias3@host3.example.com>\nl: 0\n\n"
    ),
    # 3.1.1.6: no whitespace between a display name and '<'.
    "3.1.1.6-lwsdisp": wire(
        "OPTIONS sip:user@example.com SIP/2.0\nTo: sip:user@example.com\n"
        "From: caller<sip:caller@example.com>;tag=323\nMax-Forwards: 70\n"
        "Call-ID: lwsdisp.1234abcd@funky.example.com\nCSeq: 60 OPTIONS\n"
        "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw\nl: 0\n\n"
    ),
    # 3.1.1.7: long header values and many parameters.
    "3.1.1.7-longreq": wire(
        "INVITE sip:user@example.com SIP/2.0\n"
        'To: "I have a user name of ' + "extreme" * 50 + ' proportion" <sip:user@example.com:6000;'
        + ";".join(f"unknownparam{i}=verylongvalue{'x' * 40}" for i in range(20)) + ">\n"
        "From: sip:caller@example.net;tag=12" + "9" * 300 + "\nMax-Forwards: 70\n"
        "Call-ID: longreq.one" + "really" * 100 + "longcallid\nCSeq: 3882340 INVITE\n"
        + "".join(f"Via: SIP/2.0/TCP sip{i}.example.com;branch=z9hG4bK{i}longbranch{'y' * 50}\n"
                  for i in range(30))
        + "Contact: <sip:amazinglylongcallername" + "z" * 200 + "@host5.example.net>\n"
        "Content-Type: application/sdp\nl: {len}\n\n" + _SDP + "a=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:12 QCELP/8000\n"
    ),
    # 3.1.1.8: extra octets after Content-Length in a UDP datagram are discarded.
    "3.1.1.8-dblreq": wire(
        "REGISTER sip:example.com SIP/2.0\nTo: sip:j.user@example.com\n"
        "From: sip:j.user@example.com;tag=43251j3j324\nMax-Forwards: 8\n"
        "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412\nContact: sip:j.user@host.example.com\n"
        "CSeq: 8 REGISTER\nVia: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492\n"
        "Content-Length: 0\n\n"
        "INVITE sip:joe@example.com SIP/2.0\nt: sip:joe@example.com\n"
    ),
    # 3.1.1.9: semicolons in the user part of a URI.
    "3.1.1.9-semiuri": wire(
        "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\nTo: sip:j_user@example.com\n"
        "From: sip:caller@example.org;tag=33242\nMax-Forwards: 3\n"
        "Call-ID: semiuri.0ha0isndaksdj\nCSeq: 8 OPTIONS\nAccept: application/sdp, "
        "application/pkcs7-mime,\n        multipart/mixed, multipart/signed,\n"
        "        message/sip, message/sipfrag\n"
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\nl: 0\n\n"
    ),
    # 3.1.1.10: unknown and varied transports in Via.
    "3.1.1.10-transports": wire(
        "OPTIONS sip:user@example.com SIP/2.0\nTo: sip:user@example.com\n"
        "From: <sip:caller@example.com>;tag=323\nMax-Forwards: 70\n"
        "Call-ID:  transports.kijh4akdnaqjkwendsasfdj\nAccept: application/sdp\n"
        "CSeq: 60 OPTIONS\nVia: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\n"
        "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\n"
        "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\n"
        "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\n"
        "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\nl: 0\n\n"
    ),
    # 3.1.1.11: a multipart MIME body (SDP beside a signed part), passed as opaque octets.
    "3.1.1.11-mpart01": wire(
        "MESSAGE sip:kumiko@example.org SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\n"
        "Max-Forwards: 70\nRoute: <sip:127.0.0.1:5080>\nIdentity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuL2g6JwJ86Krpl6+bEtw7M49MMLKg\n"
        "Identity-Info: <http://127.0.0.1:5080/identity.pem>;alg=rsa-sha1\n"
        "To: <sip:kumiko@example.org>\nFrom: <sip:fluffy@example.com>;tag=2fb0dcc9\n"
        "Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..\nCSeq: 1 MESSAGE\n"
        "Content-Transfer-Encoding: binary\n"
        "Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\n"
        "Date: Sat, 15 Oct 2005 04:44:56 GMT\nUser-Agent: SIPimp.org/0.2.5 (curses)\n"
        "Content-Length: {len}\n\n"
        "--7a9cbec02ceef655\nContent-Type: text/plain\nContent-Transfer-Encoding: binary\n\n"
        "Hello\n--7a9cbec02ceef655\nContent-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: binary\n\n0\x82\x01R\x06\t*\x86H\n--7a9cbec02ceef655--\n"
    ),
    # 3.1.1.12 and 3.1.1.13: an unusual reason phrase, and an empty one.
    "3.1.1.12-unreason": wire(
        "SIP/2.0 200 = 2**3 * 5**2 \xd0\xbd\xd0\xbe \xd1\x81\xd1\x82\xd0\xbe "
        "\xd0\xb4\xd0\xb5\xd0\xb2\xd1\x8f\xd0\xbd\xd0\xbe\xd1\x81\xd1\x82\xd0\xbe "
        "\xd0\xb4\xd0\xb5\xd0\xb2\xd1\x8f\xd1\x82\xd1\x8c - \xd0\xbf\xd1\x80\xd0\xbe\xd1\x81"
        "\xd1\x82\xd0\xbe\xd0\xb5\n"
        "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
        "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\nCSeq: 35 INVITE\n"
        "From: sip:user@example.com;tag=11141343\nTo: sip:user@example.edu;tag=2229\n"
        "Content-Length: 0\n\n"
    ),
    "3.1.1.13-noreason": wire(
        "SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
        "Call-ID: noreason.asndj203insdf99223ndf\nCSeq: 35 INVITE\n"
        "From: <sip:user@example.com>;tag=39ansfi3\nTo: <sip:user@example.edu>;tag=902jndnke3\n"
        "Content-Length: 0\n\n"
    ),
    # 3.3.10: a 200 whose Via names a broadcast address: parsed, and (matching no
    # transaction of ours) dropped, never answered.
    "3.3.10-bcast": wire(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
        "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23\n"
        "Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf\nCSeq: 35 INVITE\n"
        "From: sip:user@example.com;tag=11141343\nTo: sip:user@example.edu;tag=2229\n"
        "Content-Length: {len}\nContent-Type: application/sdp\nContact: <sip:user@host28.example.com>\n\n"
        + _SDP
    ),
    # 3.4.1: RFC 2543 syntax: no branch magic cookie, addr-specs without <>.
    "3.4.1-inv2543": wire(
        "INVITE sip:UserB@example.com SIP/2.0\nVia: SIP/2.0/UDP iftgw.example.com\n"
        "From: <sip:+13035551111@ift.client.example.net;user=phone>\n"
        "Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>\n"
        "To: sip:+16505552222@ss1.example.net;user=phone\n"
        "Call-ID: inv2543.1717@ift.client.example.com\nCSeq: 56 INVITE\n"
        "Content-Type: application/sdp\n\n" + _SDP
    ),
}

INVALID: dict[str, tuple[bytes, int]] = {
    # 3.1.2.1: header field separators used where they do not belong (no colon).
    "3.1.2.1-badinv01": (wire(
        "INVITE sip:user@example.com SIP/2.0\nTo: sip:j.user@example.com\n"
        "From: sip:caller@example.net;tag=134161461246\nMax-Forwards: 7\n"
        "Call-ID: badinv01.0ha0isndaksdjasdf3234nas\nCSeq: 8 INVITE\n"
        "Via: SIP/2.0/UDP 192.0.2.15;;,;,,\nContact: \"Joe\" <sip:joe@example.org>;;;;\n"
        "Content-Length: {len}\nContent-Type: application/sdp\n\n" + _SDP), 400),
    # 3.1.2.2: Content-Length larger than the body.
    "3.1.2.2-clerr": (wire(
        "INVITE sip:user@example.com SIP/2.0\nMax-Forwards: 80\nTo: sip:j.user@example.com\n"
        "From: sip:caller@example.net;tag=93942939o2\nContact: <sip:caller@hungry.example.net>\n"
        "Call-ID: clerr.0ha0isndaksdjweiafasdk3\nCSeq: 8 INVITE\n"
        "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\n"
        "Content-Type: application/sdp\nContent-Length: 9999\n\n" + _SDP), 400),
    # 3.1.2.3: negative Content-Length.
    "3.1.2.3-ncl": (wire(
        "INVITE sip:user@example.com SIP/2.0\nMax-Forwards: 254\nTo: sip:j.user@example.com\n"
        "From: sip:caller@example.net;tag=32394234\nCall-ID: ncl.0ha0isndaksdj2193423r542w35\n"
        "CSeq: 0 INVITE\nVia: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw\n"
        "Contact: <sip:caller@example53.example.net>\nContent-Type: application/sdp\n"
        "Content-Length: -999\n\n" + _SDP), 400),
    # 3.1.2.4: scalar fields with overlarge values (CSeq beyond 2**31).
    "3.1.2.4-scalar02": (wire(
        "REGISTER sip:example.com SIP/2.0\nVia: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3\n"
        "To: <sip:user@example.com>\nFrom: <sip:user@example.com>;tag=239232jh3\n"
        "CSeq: 36893488147419103232 REGISTER\nCall-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\n"
        "Max-Forwards: 300\nExpires: 10000000000000000000\n"
        "Contact: <sip:user@host129.example.com>;expires=280297596632815\nContent-Length: 0\n\n"), 400),
    # 3.1.2.5: a response with an overlarge CSeq.
    "3.1.2.5-scalar1": (wire(
        "SIP/2.0 503 Service Unavailable\nVia: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129\n"
        "To: <sip:user@example.com>\nFrom: <sip:other@example.net>;tag=2easdjfejw\n"
        "CSeq: 9292394834772304023312 OPTIONS\nCall-ID: scalar1.0-9-8-7-6-5-4-3-2-1\n"
        "Retry-After: 949302838503028349304023988\nWarning: 1812 overture \"In Progress\"\n"
        "Content-Length: 0\n\n"), 400),
    # 3.1.2.6: an unterminated quoted display name.
    "3.1.2.6-quotbal": (wire(
        "INVITE sip:user@example.com SIP/2.0\nTo: \"Mr. J. User <sip:j.user@example.com>\n"
        "From: sip:caller@example.net;tag=93334\nMax-Forwards: 10\n"
        "Call-ID: quotbal.aksdj\nContact: <sip:caller@host59.example.net>\n"
        "CSeq: 8 INVITE\nVia: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\n"
        "Content-Type: application/sdp\nContent-Length: {len}\n\n" + _SDP), 400),
    # 3.1.2.7: a Request-URI enclosed in <>.
    "3.1.2.7-ltgtruri": (wire(
        "INVITE <sip:user@example.com> SIP/2.0\nTo: sip:user@example.com\n"
        "From: sip:caller@example.net;tag=39291\nMax-Forwards: 23\n"
        "Call-ID: ltgtruri.1@192.0.2.5\nCSeq: 1 INVITE\n"
        "Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKkdjuw\nContact: <sip:caller@host5.example.net>\n"
        "Content-Type: application/sdp\nContent-Length: {len}\n\n" + _SDP), 400),
    # 3.1.2.8: whitespace inside the Request-URI.
    "3.1.2.8-lwsruri": (wire(
        "INVITE sip:user@example.com; lr SIP/2.0\nTo: sip:user@example.com;tag=3xfe-9921883-z9f\n"
        "From: sip:caller@example.net;tag=231413434\nMax-Forwards: 5\n"
        "Call-ID: lwsruri.asdfasdoeoi2323-asdfwrs\nCSeq: 23 INVITE\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395\n"
        "Contact: <sip:caller@host1.example.net>\nContent-Type: application/sdp\n"
        "Content-Length: {len}\n\n" + _SDP), 400),
    # 3.1.2.9: several spaces between request-line elements.
    "3.1.2.9-lwsstart": (wire(
        "INVITE  sip:user@example.com  SIP/2.0\nMax-Forwards: 8\nTo: sip:user@example.com\n"
        "From: sip:caller@example.net;tag=8814\nCall-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com\n"
        "CSeq: 1893884 INVITE\nVia: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923\n"
        "Contact: <sip:caller@host1.example.net>\nContent-Type: application/sdp\n"
        "Content-Length: {len}\n\n" + _SDP), 400),
    # 3.1.2.10: trailing whitespace on the request line.
    "3.1.2.10-trws": (wire(
        "OPTIONS sip:remote-target@example.com SIP/2.0  \nVia: SIP/2.0/TCP host1.example.com;branch=z9hG4bK299342093\n"
        "To: <sip:remote-target@example.com>\nFrom: <sip:local-resource@example.com>;tag=329429089\n"
        "Call-ID: trws.oicu34958239neffasdhr2345r\nAccept: application/sdp\nCSeq: 238923 OPTIONS\n"
        "Max-Forwards: 70\nContent-Length: 0\n\n"), 400),
    # 3.1.2.13: a name-addr URI with URI headers not enclosed in <>.
    "3.1.2.13-regbadct": (wire(
        "REGISTER sip:example.com SIP/2.0\nTo: sip:user@example.com\n"
        "From: sip:user@example.com;tag=998332\nMax-Forwards: 70\n"
        "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1\nCSeq: 1 REGISTER\n"
        "Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\n"
        "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\nl: 0\n\n"), 400),
    # 3.1.2.14: spaces inside an addr-spec.
    "3.1.2.14-badaspec": (wire(
        "OPTIONS sip:user@example.org SIP/2.0\nVia: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234\n"
        "Max-Forwards: 70\nFrom: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423\n"
        "To: \"Watson, Thomas\" < sip:t.watson@example.org >\nCall-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3\n"
        "Accept: application/sdp\nCSeq: 3923239 OPTIONS\nl: 0\n\n"), 400),
    # 3.1.2.15: a display name with characters that are not tokens, unquoted.
    "3.1.2.15-baddn": (wire(
        "OPTIONS sip:t.watson@example.org SIP/2.0\nVia: SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw\n"
        "Max-Forwards: 70\nFrom: Bell, Alexander <sip:a.g.bell@example.com>;tag=43\n"
        "To: Watson, Thomas <sip:t.watson@example.org>\nCall-ID: baddn.31415@c.example.com\n"
        "Accept: application/sdp\nCSeq: 3923239 OPTIONS\nl: 0\n\n"), 400),
    # 3.1.2.16: an unknown protocol version: 505.
    "3.1.2.16-badvers": (wire(
        "OPTIONS sip:t.watson@example.org SIP/7.0\nVia: SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\n"
        "Max-Forwards: 70\nFrom: A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\n"
        "To: T. Watson <sip:t.watson@example.org>\nCall-ID: badvers.31417@c.example.com\n"
        "CSeq: 1 OPTIONS\nl: 0\n\n"), 505),
    # 3.1.2.17 and 3.1.2.18: the CSeq method differs from the request method.
    "3.1.2.17-mismatch01": (wire(
        "OPTIONS sip:user@example.com SIP/2.0\nTo: sip:j.user@example.com\n"
        "From: sip:caller@example.net;tag=34525\nMax-Forwards: 6\n"
        "Call-ID: mismatch01.dj0234sxdfl3\nCSeq: 8 INVITE\n"
        "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\nl: 0\n\n"), 400),
    "3.1.2.18-mismatch02": (wire(
        "NEWMETHOD sip:user@example.com SIP/2.0\nTo: sip:j.user@example.com\n"
        "From: sip:caller@example.net;tag=34525\nMax-Forwards: 6\n"
        "Call-ID: mismatch02.dj0234sxdfl3\nCSeq: 8 INVITE\n"
        "Contact: <sip:caller@host.example.net>\n"
        "Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw\nl: 0\n\n"), 400),
    # 3.1.2.19: a response code beyond 699.
    "3.1.2.19-bigcode": (wire(
        "SIP/2.0 4294967301 better not break the receiver\n"
        "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
        "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\nCSeq: 353494 INVITE\n"
        "From: <sip:user@example.com>;tag=39ansfi3\nTo: <sip:user@example.edu>;tag=902jndnke3\n"
        "Content-Length: 0\n\n"), 400),
    # 3.3.1: required header fields missing (no Call-ID, From, To).
    "3.3.1-insuf": (wire(
        "INVITE sip:user@example.com SIP/2.0\nCSeq: 193942 INVITE\n"
        "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\nContent-Type: application/sdp\n"
        "l: {len}\n\n" + _SDP), 400),
    # 3.3.2: a Request-URI with an unknown scheme: 416.
    "3.3.2-unkscm": (wire(
        "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0\nTo: sip:user@example.com\n"
        "From: sip:caller@example.net;tag=384\nMax-Forwards: 3\nCall-ID: unkscm.nasdfasser0q239nwsdfasdkl34\n"
        "CSeq: 3923423 OPTIONS\nVia: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
        "Content-Length: 0\n\n"), 416),
    # 3.3.8: several values in a single-valued field (two From).
    "3.3.8-multi01": (wire(
        "INVITE sip:user@company.com SIP/2.0\nContact: <sip:caller@host25.example.net>\n"
        "Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw\nMax-Forwards: 70\nCSeq: 5 INVITE\n"
        "Call-ID: multi01.98asdh@192.0.2.1\nFrom: sip:caller@example.com;tag=3413415\n"
        "To: sip:user@example.com\nTo: sip:other@example.net\n"
        "From: sip:caller@example.net;tag=2923420123\nContent-Type: application/sdp\n"
        "l: {len}\n\n" + _SDP), 400),
    # 3.3.9: two different Content-Length values.
    "3.3.9-mcl01": (wire(
        "OPTIONS sip:user@example.com SIP/2.0\nVia: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423\n"
        "To: sip:user@example.com\nFrom: sip:other@example.net;tag=3923942\n"
        "Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\nCSeq: 15932 OPTIONS\n"
        "Content-Length: 13\nMax-Forwards: 60\nContent-Length: 5\n"
        "Content-Type: text/plain\n\nThere's no way to know how many octets are supposed to be here.\n"), 400),
}

#: RFC 4475 §3.3 cases that parse but that a UA must refuse, with the status it answers.
REFUSED: dict[str, tuple[bytes, int]] = {
    # 3.3.3: a known but atypical Request-URI scheme (not sip/sips/tel): 416.
    "3.3.3-novelsc": (wire(
        "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\nTo: sip:user@example.com\n"
        "From: sip:caller@example.net;tag=384\nMax-Forwards: 3\nCall-ID: novelsc.asdfasser0q239nwsdfasdkl34\n"
        "CSeq: 3923423 OPTIONS\nVia: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
        "Content-Length: 0\n\n"), 416),
    # 3.3.5: Require naming extensions we do not have: 420 with Unsupported.
    "3.3.5-bext01": (wire(
        "OPTIONS sip:user@example.com SIP/2.0\nTo: sip:j_user@example.com\n"
        "From: sip:caller@example.net;tag=242etr\nMax-Forwards: 6\n"
        "Call-ID: bext01.0ha0isndaksdj\nRequire: nothingSupportsThis, nothingSupportsThisEither\n"
        "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\nCSeq: 8 OPTIONS\n"
        "Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw\n"
        "Content-Length: 0\n\n"), 420),
    # 3.3.6: an INVITE whose body is of a type we do not understand: 415.
    "3.3.6-invut": (wire(
        "INVITE sip:user@example.com SIP/2.0\nContact: <sip:caller@host5.example.net>\n"
        "To: sip:j.user@example.com\nFrom: sip:caller@example.net;tag=8392034\nMax-Forwards: 70\n"
        "Call-ID: invut.0ha0isndaksdjadsfij34n23d\nCSeq: 235448 INVITE\n"
        "Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw\n"
        "Content-Type: application/unknownformat\nContent-Length: {len}\n\n"
        "<audio>\n <pcmu port=\"443\"/>\n</audio>\n"), 415),
    # 3.3.11: an INVITE with Max-Forwards 0. The gateway relays INVITEs (to RIPP), so it
    # answers as a forwarding element would: 483.
    "3.3.11-zeromf": (wire(
        "INVITE sip:user@example.com SIP/2.0\nVia: SIP/2.0/UDP host5.example.net;branch=z9hG4bK-zeromf\n"
        "To: sip:user@example.com\nFrom: sip:caller@example.net;tag=3ghrj3\n"
        "Call-ID: zeromf.29392\nCSeq: 1 INVITE\nMax-Forwards: 0\n"
        "Contact: <sip:caller@host5.example.net>\nContent-Type: application/sdp\n"
        "Content-Length: {len}\n\n" + _SDP), 483),
}
