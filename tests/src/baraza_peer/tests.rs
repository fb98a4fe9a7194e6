//! The peer against the captures: exact bytes, both roles of the association, replies.
use super::*;

// The captures (exact bytes of baraza-captures/NNN_*.http).
/// Capture 001_b-init_b.test-to-a.test_req_SetupTransaction-Request-SendSecretToken.http
const C001: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 372\r\nX-WV-TransactionID: bt-7bf56d57\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-7bf56d57\">\n<SendSecretToken serviceID=\"wv:@b.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n<SecretToken>78fdb4c914e91c8610af7b0686742dcc</SecretToken>\n</SendSecretToken>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 002_b-init_a.test-to-b.test_resp_empty.http
const C002: &str = "HTTP/1.1 200 OK\r\nServer: Kannel/1.4.5\r\nDate: Wed, 25 Nov 2026 12:27:54 GMT\r\nContent-Length: 0\r\nConnection: Close\r\nConnection: keep-alive\r\n\r\n";
/// Capture 004_b-init_a.test-to-b.test_req_SetupTransaction-Response-SendSecretToken.http
const C004: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 7\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 354\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n <SetupTransaction mode=\"Response\" transactionID=\"7\">\n <SendSecretToken serviceID=\"wv:@a.test\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n3d2d0184ddf621eccee0558036087513\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n";
/// Capture 006_b-init_b.test-to-a.test_req_SetupTransaction-Request-LoginRequest.http
const C006: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 361\r\nX-WV-TransactionID: bt-7bf56d57\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-7bf56d57\">\n<LoginRequest serviceID=\"wv:@b.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">CtN2bVlhWAZMvOdV16FeXA==</PasswordDigest>\n</LoginRequest>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 008_b-init_a.test-to-b.test_req_SetupTransaction-Response-LoginRequest.http
const C008: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 351\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"bt-7bf56d57\" mode=\"Response\">\n<LoginRequest serviceID=\"wv:@a.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">\nlwWr9VcRGlZ/JwHRzH473A==\r\n\n</PasswordDigest>\n</LoginRequest>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
/// Capture 010_b-init_b.test-to-a.test_req_SetupTransaction-Request-LoginResponse.http
const C010: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 317\r\nX-WV-TransactionID: bt-7bf56d57\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-7bf56d57\">\n<LoginResponse sessionID=\"bsess-bc5c37@b.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n</LoginResponse>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 012_b-init_a.test-to-b.test_req_SetupTransaction-Response-LoginResponse.http
const C012: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 293\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"bt-7bf56d57\" mode=\"Response\">\n<LoginResponse sessionID=\"7@a.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n </LoginResponse>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
/// Capture 014_b-init_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
const C014: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 801\r\nX-WV-TransactionID: bt-msg-1\r\nX-WV-SessionID: bsess-bc5c37@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-bc5c37@b.test\">\n<Transaction mode=\"Request\" transactionID=\"bt-msg-1\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"42\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n<DateTime format=\"iso8601\">20261125T122755Z</DateTime>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">SGVsbG8gYWxpY2UsIHRoaXMgaXMgYm9iIGZyb20gYi50ZXN0IChTU1Ap</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
/// Capture 016_b-init_a.test-to-b.test_req_Session-Response-SendMessageResponse.http
const C016: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-bc5c37@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 396\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"7@a.test\">\n<Transaction mode=\"Response\" transactionID=\"bt-msg-1\">\n<SendMessageResponse messageID=\"76a3650fc4214526f02cc85b2be001cf2\">\n<Status code=\"200\">\n<StatusDescription>Success</StatusDescription>\n</Status>\n\n</SendMessageResponse>\n\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
/// Capture 034_a-init_a.test-to-b.test_req_SetupTransaction-Request-SendSecretToken.http
const C034: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 8\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 353\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n <SetupTransaction mode=\"Request\" transactionID=\"8\">\n <SendSecretToken serviceID=\"wv:@a.test\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n29ca0687ecd71081f4064aae323d1823\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n";
/// Capture 036_a-init_b.test-to-a.test_req_SetupTransaction-Response-SendSecretToken.http
const C036: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 363\r\nX-WV-TransactionID: 8\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Response\" transactionID=\"8\">\n<SendSecretToken serviceID=\"wv:@b.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n<SecretToken>c0800f0a2cf48cceabda495b2c333839</SecretToken>\n</SendSecretToken>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 038_a-init_a.test-to-b.test_req_SetupTransaction-Request-LoginRequest.http
const C038: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 340\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"8\" mode=\"Request\">\n<LoginRequest serviceID=\"wv:@a.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">\nzIfhPaN/XObRfEvrauDByA==\r\n\n</PasswordDigest>\n</LoginRequest>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
/// Capture 040_a-init_b.test-to-a.test_req_SetupTransaction-Response-LoginRequest.http
const C040: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 352\r\nX-WV-TransactionID: 8\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Response\" transactionID=\"8\">\n<LoginRequest serviceID=\"wv:@b.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">LgVrlZDLt9MSY0S2ah5/BQ==</PasswordDigest>\n</LoginRequest>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 042_a-init_a.test-to-b.test_req_SetupTransaction-Request-LoginResponse.http
const C042: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 282\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"8\" mode=\"Request\">\n<LoginResponse sessionID=\"8@a.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n </LoginResponse>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
/// Capture 044_a-init_b.test-to-a.test_req_SetupTransaction-Response-LoginResponse.http
const C044: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 308\r\nX-WV-TransactionID: 8\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Response\" transactionID=\"8\">\n<LoginResponse sessionID=\"bsess-f709b4@b.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n</LoginResponse>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 046_a-init_a.test-to-b.test_req_Session-Request-SendMessageRequest.http
const C046: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 0000000002-0\r\nx-wv-sessionid: 8@a.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 823\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Request\" transactionID=\"0000000002-0\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@a.test\">\n<User userID=\"wv:alice@a.test\"/>\n</Requestor></MetaInfo>\n\n<MessageInfo messageID=\"8aee9981801716c039215f69def4ffad7\" contentType=\"text/plain\" contentSize=\"30\">\n<Recipient>\n<User userID=\"wv:bob@b.test\"/>\n\n</Recipient>\n<Sender>\n<User userID=\"wv:alice@a.test\"/>\n\n</Sender>\n\n<DateTime format=\"iso8601\">2026-12-25T12:27:59Z</DateTime>\n\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">\nSGkgYm9iLCBhbGljZSBmcm9tIGEudGVzdCBoZXJl\r\n\n</ContentData>\n\n</SendMessageRequest>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
/// Capture 052_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
const C052: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 698\r\nX-WV-TransactionID: probe-1\r\nX-WV-SessionID: 8@a.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-1\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"14\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmUxIHNpZD1BJ3M=</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
/// Capture 054_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
const C054: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 697\r\nX-WV-TransactionID: probe-2\r\nX-WV-SessionID: bsess-f709b4@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-2\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"6\">\n<Recipient>\n<User userID=\"wv:nobody@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmUy</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
/// Capture 056_probes_a.test-to-b.test_req_Session-Response-SendMessageResponse.http
const C056: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-f709b4@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 476\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Response\" transactionID=\"probe-2\">\n<SendMessageResponse messageID=\"\">\n<Status code=\"900\">\n<StatusDescription>Errors</StatusDescription>\n<DetailedResult code=\"427\">\n<StatusDescription>invalid userid: nobody@a.test</StatusDescription>\n</DetailedResult>\n</Status>\n\n</SendMessageResponse>\n\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
/// Capture 058_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
const C058: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 704\r\nX-WV-TransactionID: probe-3\r\nX-WV-SessionID: bsess-f709b4@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-3\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@c.test\">\n<User userID=\"wv:mallory@c.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"6\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:mallory@c.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmUz</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
/// Capture 060_probes_a.test-to-b.test_req_Session-Response-Status.http
const C060: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-f709b4@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 246\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Response\" transactionID=\"probe-3\">\n<Status code=\"901\"/>\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
/// Capture 062_probes_b.test-to-a.test_req_other.http
const C062: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 166\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Foo transactionID=\"x\"><Bar/></Foo>\n</WV-SSP-Message>\n";
/// Capture 064_probes_b.test-to-a.test_req_Session-Request-GetPresenceRequest.http
const C064: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 450\r\nX-WV-TransactionID: probe-5\r\nX-WV-SessionID: bsess-f709b4@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-5\">\n<GetPresenceRequest>\n<MetaInfo clientOriginated=\"Yes\"><Requestor serviceID=\"wv:@b.test\"><User userID=\"wv:bob@b.test\"/></Requestor></MetaInfo>\n<UserID userID=\"wv:alice@a.test\"/>\n</GetPresenceRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
/// Capture 066_probes_a.test-to-b.test_req_Session-Response-GetPresenceResponse.http
const C066: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-f709b4@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 271\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Response\" transactionID=\"probe-5\">\n<GetPresenceResponse>\n</GetPresenceResponse>\n\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
/// Capture 068_probes_b.test-to-a.test_req_SetupTransaction-Request-SendSecretToken.http
const C068: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 374\r\nX-WV-TransactionID: bt-bad-da3455\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-bad-da3455\">\n<SendSecretToken serviceID=\"wv:@b.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n<SecretToken>7d1a0fa4820c669ba5f566ef4af27209</SecretToken>\n</SendSecretToken>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 070_probes_a.test-to-b.test_req_SetupTransaction-Response-SendSecretToken.http
const C070: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 9\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 354\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n <SetupTransaction mode=\"Response\" transactionID=\"9\">\n <SendSecretToken serviceID=\"wv:@a.test\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n8b8dc80828ff34ecea2515d29224b4ab\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n";
/// Capture 072_probes_b.test-to-a.test_req_SetupTransaction-Request-LoginRequest.http
const C072: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 363\r\nX-WV-TransactionID: bt-bad-da3455\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-bad-da3455\">\n<LoginRequest serviceID=\"wv:@b.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">YhYF0FG4ituwYCVswx9TGQ==</PasswordDigest>\n</LoginRequest>\n</SetupTransaction>\n</WV-SSP-Message>\n";
/// Capture 074_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
const C074: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: text/xml\r\nContent-Length: 696\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-7\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"6\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmU3</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";

fn capture_target() -> Target {
    Target::parse("https://imps.b.test:19090/").unwrap()
}

fn render(req: &OutReq) -> String {
    String::from_utf8(build_request(&capture_target(), req)).unwrap()
}

fn users(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, m)| (n.to_string(), m.to_string()))
        .collect()
}

async fn peer(domain: &str, list: &[(&str, &str)]) -> BarazaPeer {
    BarazaPeer::start(BarazaPeerConfig {
        domain: domain.into(),
        users: users(list),
        commit_race: None,
    })
    .await
    .unwrap()
}

/// Feed one captured request to the handler; the answer and the POSTs it would make.
async fn feed(p: &BarazaPeer, raw: &str) -> (Answer, Vec<String>) {
    let mut r = raw.as_bytes();
    let mut buf = Vec::new();
    let req = read_message(&mut r, &mut buf, false)
        .await
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    let out = p.inner.handle_request(&req);
    let posts = out
        .after
        .into_iter()
        .filter_map(|a| match a {
            After::Post(r) => {
                let url = p.inner.url_for(&r.domain).unwrap();
                let bytes = build_request(&Target::parse(&url).unwrap(), &r);
                Some(String::from_utf8(bytes).unwrap())
            }
            _ => None,
        })
        .collect();
    (out.answer, posts)
}

fn token_of(p: &BarazaPeer, row: u64) -> String {
    lock(&p.inner.state)
        .assocs
        .iter()
        .find(|a| a.row == row)
        .unwrap()
        .our_token
        .clone()
}

#[test]
fn kannel_ack_dates_and_digests() {
    assert_eq!(ack_bytes("200 OK", true, &rfc1123(1_795_609_674)), C002);
    assert_eq!(
        ack_bytes("400 Bad Request", false, "D"),
        "HTTP/1.1 400 Bad Request\r\nServer: Kannel/1.4.5\r\nDate: D\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    );
    // 006 and 008: base64(MD5(the other side's token as text)).
    assert_eq!(
        digest_b64(b"3d2d0184ddf621eccee0558036087513"),
        "CtN2bVlhWAZMvOdV16FeXA=="
    );
    assert_eq!(
        digest_b64(b"78fdb4c914e91c8610af7b0686742dcc"),
        "lwWr9VcRGlZ/JwHRzH473A=="
    );
    let t = new_token();
    assert_eq!(t.len(), 32);
    assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(decode_token("\n abc \n", false).unwrap(), b"abc");
    assert_eq!(decode_token(" YWJj\r\n", true).unwrap(), b"abc");
    assert!(decode_token("!!", true).is_none());
    let long = kannel_b64(&[7u8; 100]);
    assert!(long.ends_with("\r\n"));
    assert!(long.split("\r\n").all(|l| l.len() <= 76));
    assert_eq!(
        split_id("wv:+4915112345678@a.test"),
        ("+4915112345678", "a.test")
    );
    assert_eq!(split_id("bob"), ("bob", ""));
    assert_eq!(service_domain("wv:@B.Test").as_deref(), Some("b.test"));
    assert_eq!(service_domain("wv:"), None);
    let t = Target::parse("https://[::1]:8443").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.path.as_str()),
        ("::1", 8443, "/")
    );
    assert_eq!(t.host_header, "[::1]:8443");
    assert!(Target::parse("ftp://x/").is_err());
    assert!(Target::parse("https://x:notaport/").is_err());
}

#[tokio::test]
async fn http_framing_never_panics() {
    let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let mut r = raw.as_bytes();
    let mut buf = Vec::new();
    let m = read_message(&mut r, &mut buf, true).await.unwrap().unwrap();
    assert_eq!(m.body, b"abcde");
    let m = read_message(&mut r, &mut buf, true).await.unwrap().unwrap();
    assert_eq!(m.status_code(), Some(204));
    assert!(
        read_message(&mut r, &mut buf, true)
            .await
            .unwrap()
            .is_none()
    );
    let mut r = "HTTP/1.1 200 OK\r\n\r\nrest".as_bytes();
    let m = read_message(&mut r, &mut Vec::new(), true)
        .await
        .unwrap()
        .unwrap();
    assert!(m.until_eof);
    assert_eq!(m.body, b"rest");
    for bad in [
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        "POST / HTTP/1.1\r\nbad header\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x",
    ] {
        let mut r = bad.as_bytes();
        assert!(
            read_message(&mut r, &mut Vec::new(), false).await.is_err(),
            "{bad}"
        );
    }
}

#[test]
fn client_requests_match_captures_byte_for_byte() {
    let sst = |mode, tid: &str, token| {
        OutReq::new("b.test", body_secret_token(mode, tid, "a.test", token)).with_tid(tid)
    };
    assert_eq!(
        render(&sst(
            Mode::Response,
            "7",
            "3d2d0184ddf621eccee0558036087513"
        )),
        C004
    );
    assert_eq!(
        render(&sst(Mode::Request, "8", "29ca0687ecd71081f4064aae323d1823")),
        C034
    );
    let login = |mode, tid, token: &[u8]| {
        OutReq::new(
            "b.test",
            body_login_request(mode, tid, "a.test", &digest_b64(token)),
        )
    };
    assert_eq!(
        render(&login(
            Mode::Response,
            "bt-7bf56d57",
            b"78fdb4c914e91c8610af7b0686742dcc"
        )),
        C008
    );
    assert_eq!(
        render(&login(
            Mode::Request,
            "8",
            b"c0800f0a2cf48cceabda495b2c333839"
        )),
        C038
    );
    assert_eq!(
        render(&OutReq::new(
            "b.test",
            body_login_response(Mode::Response, "bt-7bf56d57", "7@a.test")
        )),
        C012
    );
    assert_eq!(
        render(&OutReq::new(
            "b.test",
            body_login_response(Mode::Request, "8", "8@a.test")
        )),
        C042
    );
    let reply = |our: &str, tid: &str, theirs: &str, prim: &str| {
        render(&OutReq::new("b.test", body_session_response(our, tid, prim)).with_sid(theirs))
    };
    assert_eq!(
        reply(
            "7@a.test",
            "bt-msg-1",
            "bsess-bc5c37@b.test",
            &prim_send_ok("76a3650fc4214526f02cc85b2be001cf2")
        ),
        C016
    );
    assert_eq!(
        reply(
            "8@a.test",
            "probe-2",
            "bsess-f709b4@b.test",
            &prim_send_invalid("", &["nobody@a.test".to_owned()])
        ),
        C056
    );
    assert_eq!(
        reply(
            "8@a.test",
            "probe-3",
            "bsess-f709b4@b.test",
            &prim_status(901)
        ),
        C060
    );
    assert_eq!(
        reply(
            "8@a.test",
            "probe-5",
            "bsess-f709b4@b.test",
            GET_PRESENCE_EMPTY
        ),
        C066
    );
    let im = body_send_message_request(
        "8@a.test",
        "0000000002-0",
        "a.test",
        "wv:alice@a.test",
        "wv:bob@b.test",
        "8aee9981801716c039215f69def4ffad7",
        "Hi bob, alice from a.test here",
        "2026-12-25T12:27:59Z",
        false,
    );
    assert_eq!(
        render(
            &OutReq::new("b.test", im)
                .with_tid("0000000002-0")
                .with_sid("8@a.test")
        ),
        C046
    );
}

/// Replays 001–017 (b.test initiates) into an a.test peer: every answer is byte-identical.
#[tokio::test]
async fn replays_b_initiated_captures() {
    let a = peer("a.test", &[("alice", "+4915112345678")]).await;
    a.set_peer("b.test", "https://imps.b.test:19090/");
    lock(&a.inner.state).next_row = 6;

    let (answer, posts) = feed(&a, C001).await;
    assert_eq!(answer, Answer::Ok);
    let token = token_of(&a, 7);
    assert_eq!(
        posts,
        [C004.replace("3d2d0184ddf621eccee0558036087513", &token)]
    );
    // Continue with the captured token so that 006's digest matches.
    lock(&a.inner.state).assocs[0].our_token = "3d2d0184ddf621eccee0558036087513".into();
    assert_eq!(feed(&a, C006).await, (Answer::Ok, vec![C008.to_owned()]));
    assert!(!a.is_associated());
    assert_eq!(feed(&a, C010).await, (Answer::Ok, vec![C012.to_owned()]));
    assert!(a.is_associated());
    assert_eq!(
        a.inner.session_for("b.test"),
        Some(("7@a.test".to_owned(), "bsess-bc5c37@b.test".to_owned()))
    );

    let (answer, posts) = feed(&a, C014).await;
    assert_eq!(answer, Answer::Ok);
    assert_eq!(posts.len(), 1);
    let mid = posts[0]
        .split("messageID=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(mid.len(), 33, "{mid}");
    assert_eq!(
        posts[0],
        C016.replace("76a3650fc4214526f02cc85b2be001cf2", &mid)
    );
    assert_eq!(
        a.received(),
        [ReceivedMessage {
            to_local: "alice".into(),
            from_id: "wv:bob@b.test".into(),
            text: "Hello alice, this is bob from b.test (SSP)".into(),
        }]
    );
    a.shutdown().await;
}

/// Replays 034–049 (a.test initiates) and the probes 052–074 into an a.test peer.
#[tokio::test]
async fn replays_a_initiated_captures_and_probes() {
    let a = peer("a.test", &[("alice", "+4915112345678")]).await;
    a.set_peer("b.test", "https://imps.b.test:19090/");
    {
        let mut s = lock(&a.inner.state);
        s.next_row = 8;
        s.assocs.push(Assoc {
            row: 8,
            domain: "b.test".into(),
            outgoing: true,
            tid: "8".into(),
            our_token: "29ca0687ecd71081f4064aae323d1823".into(),
            their_token: None,
            verified: false,
            their_session: None,
            complete: false,
            committed_at: None,
        });
    }
    assert_eq!(feed(&a, C036).await, (Answer::Ok, vec![C038.to_owned()]));
    assert_eq!(feed(&a, C040).await, (Answer::Ok, vec![C042.to_owned()]));
    assert_eq!(feed(&a, C044).await, (Answer::Ok, vec![]));
    assert_eq!(
        a.inner.session_for("b.test"),
        Some(("8@a.test".to_owned(), "bsess-f709b4@b.test".to_owned()))
    );
    // P1: Baraza's own session ID.
    assert!(matches!(feed(&a, C052).await, (Answer::Close(_), p) if p.is_empty()));
    // P2: unknown recipient.
    assert_eq!(feed(&a, C054).await, (Answer::Ok, vec![C056.to_owned()]));
    // P3: sender outside the session's domain.
    assert_eq!(feed(&a, C058).await, (Answer::Ok, vec![C060.to_owned()]));
    // P4: unknown top element.
    assert_eq!(feed(&a, C062).await, (Answer::BadRequest, vec![]));
    // P5: presence.
    assert_eq!(feed(&a, C064).await, (Answer::Ok, vec![C066.to_owned()]));
    // P6: a second association (row 9), then a wrong digest.
    let (answer, posts) = feed(&a, C068).await;
    assert_eq!(answer, Answer::Ok);
    assert_eq!(
        posts,
        [C070.replace("8b8dc80828ff34ecea2515d29224b4ab", &token_of(&a, 9))]
    );
    assert!(matches!(feed(&a, C072).await, (Answer::Close(_), p) if p.is_empty()));
    assert!(lock(&a.inner.state).assocs.iter().all(|x| x.row != 9));
    // P7: SSP under text/xml.
    assert!(matches!(feed(&a, C074).await, (Answer::Close(_), p) if p.is_empty()));
    assert!(a.received().is_empty());
    // The first association survived all that.
    assert!(a.is_associated());
    a.shutdown().await;
}

#[tokio::test]
async fn two_peers_associate_and_message_both_ways() {
    let a = peer("a.test", &[("alice", "+4915112345678")]).await;
    let b = peer("b.test", &[("bob", "+4930123456")]).await;
    a.set_peer("b.test", &b.url());
    b.set_peer("a.test", &a.url());
    assert!(!a.is_associated());
    a.associate().await.unwrap();
    assert!(a.is_associated());
    assert!(b.is_associated());

    let answer = a
        .send_message("alice", "wv:bob@b.test", "Hello bob")
        .await
        .unwrap();
    let Primitive::SendMessageResponse(r) = answer else {
        panic!("{answer:?}")
    };
    let status = r.status.unwrap();
    assert_eq!(status.code, 200);
    assert_eq!(status.description.as_deref(), Some("Success"));
    assert!(!r.message_id.unwrap().is_empty());
    assert_eq!(
        b.received(),
        [ReceivedMessage {
            to_local: "bob".into(),
            from_id: "wv:alice@a.test".into(),
            text: "Hello bob".into(),
        }]
    );

    // b answers over the association a opened, to alice by MSISDN.
    let answer = b
        .send_message("bob", "+4915112345678@a.test", "Hi alice <3 & more")
        .await
        .unwrap();
    let Primitive::SendMessageResponse(r) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(r.status.unwrap().code, 200);
    assert_eq!(
        a.wait_received(1, DEADLINE).await.unwrap(),
        [ReceivedMessage {
            to_local: "alice".into(),
            from_id: "wv:bob@b.test".into(),
            text: "Hi alice <3 & more".into(),
        }]
    );

    // Unknown recipient (056).
    let answer = a
        .send_message("alice", "wv:nobody@b.test", "?")
        .await
        .unwrap();
    let Primitive::SendMessageResponse(r) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(r.message_id.as_deref(), Some(""));
    let status = r.status.unwrap();
    assert_eq!(status.code, 900);
    assert_eq!(status.details.len(), 1);
    assert_eq!(status.details[0].code, 427);
    assert_eq!(
        status.details[0].description.as_deref(),
        Some("invalid userid: nobody@b.test")
    );

    // b opens its own association as well; the newest one is used from then on.
    b.associate().await.unwrap();
    let answer = b
        .send_message("+4930123456", "wv:alice@a.test", "again")
        .await
        .unwrap();
    assert!(matches!(answer, Primitive::SendMessageResponse(_)));
    let got = a.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].from_id, "wv:+4930123456@b.test");
    assert!(a.send_message("carol", "wv:bob@b.test", "x").await.is_err());

    let wire = a.wire_log();
    let first = wire
        .iter()
        .find(|e| e.direction == WireDirection::Out && e.raw.starts_with("POST "))
        .unwrap();
    assert!(first.raw.starts_with(
        "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 1\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\n"
    ));
    assert!(
        first
            .body()
            .contains(" <SetupTransaction mode=\"Request\" transactionID=\"1\">")
    );
    for w in [&wire, &b.wire_log()] {
        assert!(w.iter().all(|e| e.direction != WireDirection::Closed));
        for e in w.iter().filter(|e| e.raw.starts_with("HTTP/1.1 ")) {
            if e.direction == WireDirection::Out {
                assert!(
                    e.raw
                        .starts_with("HTTP/1.1 200 OK\r\nServer: Kannel/1.4.5\r\nDate: ")
                );
                assert!(
                    e.raw
                        .ends_with("\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
                );
            }
        }
    }
    // One keep-alive connection each way for the whole exchange.
    assert_eq!(a.inner.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(b.inner.accepted.load(Ordering::Relaxed), 1);
    a.shutdown().await;
    b.shutdown().await;
}

// -- a raw TLS client playing a Python-like peer (x.test), as in the captures --

async fn raw_connect(p: &BarazaPeer) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = ssp_gateway::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(p.cert_der())).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(format!("imps.{}", p.domain())).unwrap();
    timeout(DEADLINE, async {
        let tcp = TcpStream::connect(p.inner.addr).await.unwrap();
        TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap()
    })
    .await
    .unwrap()
}

fn raw_request(content_type: &str, body: &str, close: bool) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: imps.b.test:18443\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// One request with `Connection: close`; everything the server sent before closing.
async fn raw_post(p: &BarazaPeer, content_type: &str, body: &str) -> String {
    let mut s = raw_connect(p).await;
    timeout(
        DEADLINE,
        s.write_all(raw_request(content_type, body, true).as_bytes()),
    )
    .await
    .unwrap()
    .unwrap();
    let mut out = Vec::new();
    let _ = timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection");
    String::from_utf8(out).unwrap()
}

fn py_setup(mode: &str, tid: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<SetupTransaction mode=\"{mode}\" transactionID=\"{tid}\">\n{inner}\n</SetupTransaction>\n</WV-SSP-Message>\n"
    )
}

fn py_token(token_element: &str) -> String {
    format!(
        "<SendSecretToken serviceID=\"wv:@x.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n{token_element}\n</SendSecretToken>"
    )
}

fn py_login_request(digest: &str) -> String {
    format!(
        "<LoginRequest serviceID=\"wv:@x.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">{digest}</PasswordDigest>\n</LoginRequest>"
    )
}

fn py_im(sid: &str, tid: &str, from: &str, to: &str, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@x.test\">\n<User userID=\"{from}\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"{}\">\n<Recipient>\n<User userID=\"{to}\"/>\n</Recipient>\n<Sender>\n<User userID=\"{from}\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">{}</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
        text.len(),
        B64.encode(text)
    )
}

/// The first message `p` sent containing all `needles`, waiting for it if needed.
async fn sent(p: &BarazaPeer, needles: &[&str]) -> WireEntry {
    let hit = |e: &WireEntry| {
        e.direction == WireDirection::Out && needles.iter().all(|n| e.raw.contains(n))
    };
    let found = p
        .inner
        .wait_until(DEADLINE, || lock(&p.inner.wire).iter().any(hit))
        .await;
    assert!(found, "nothing sent with {needles:?}: {:#?}", p.wire_log());
    p.wire_log().into_iter().find(hit).unwrap()
}

/// The token `p` sent in its SendSecretToken Response with transaction ID `row`.
async fn token_sent(p: &BarazaPeer, row: u64) -> String {
    let e = sent(
        p,
        &[
            &format!("x-wv-transactionid: {row}\r\n"),
            &format!(" <SetupTransaction mode=\"Response\" transactionID=\"{row}\">"),
            "procotolVersion=\"1.3\"",
        ],
    )
    .await;
    let t = e
        .body()
        .split("<SecretToken>\n")
        .nth(1)
        .and_then(|r| r.split("\n</SecretToken>").next())
        .unwrap()
        .to_owned();
    assert_eq!(t.len(), 32);
    t
}

const OK_CLOSE: &str =
    "\r\nContent-Length: 0\r\nConnection: Close\r\nConnection: keep-alive\r\n\r\n";

#[tokio::test]
async fn http_errors_and_responder_role_over_raw_tls() {
    let p = peer("b.test", &[("bob", "+4930123456")]).await;
    // p's async answers go to another peer, which matches none of them and drops them.
    let sink = peer("x.test", &[]).await;
    p.set_peer("x.test", &sink.url());
    let ct = SSP_CONTENT_TYPE;

    // Keep-alive: several requests on one connection; P4 and garbage give an empty 400.
    let foo = format!(
        "<?xml version=\"1.0\"?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Foo transactionID=\"x\"><Bar/></Foo>\n</WV-SSP-Message>\n"
    );
    let mut s = raw_connect(&p).await;
    let mut buf = Vec::new();
    for body in [foo.as_str(), foo.as_str(), "not xml at all"] {
        timeout(
            DEADLINE,
            s.write_all(raw_request(ct, body, false).as_bytes()),
        )
        .await
        .unwrap()
        .unwrap();
        let resp = timeout(DEADLINE, read_message(&mut s, &mut buf, true))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let raw = String::from_utf8(resp.raw).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 400 Bad Request\r\nServer: Kannel/1.4.5\r\nDate: "),
            "{raw}"
        );
        assert!(
            raw.ends_with(" GMT\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"),
            "{raw}"
        );
    }
    drop(s);
    // `Connection: close`: the duplicated Connection header, then the server closes.
    let r = raw_post(&p, ct, &foo).await;
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
    assert!(r.ends_with(OK_CLOSE), "{r}");

    // Closed without any HTTP response: P7 (text/xml), an unknown session, an unmatched
    // LoginRequest.
    let im = py_im(
        "xs-1@x.test",
        "m-0",
        "wv:carol@x.test",
        "wv:bob@b.test",
        "x",
    );
    assert_eq!(raw_post(&p, "text/xml", &im).await, "");
    assert_eq!(raw_post(&p, ct, &im).await, "");
    let stray = py_setup("Request", "nope", &py_login_request("AAAA"));
    assert_eq!(raw_post(&p, ct, &stray).await, "");

    // P6: an association with a wrong digest is closed and forgotten.
    let sst = py_setup(
        "Request",
        "xt-1",
        &py_token("<SecretToken>00112233445566778899aabbccddeeff</SecretToken>"),
    );
    let r = raw_post(&p, ct, &sst).await;
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\nServer: Kannel/1.4.5\r\n"),
        "{r}"
    );
    assert!(r.ends_with(OK_CLOSE), "{r}");
    let token1 = token_sent(&p, 1).await;
    let wrong = py_setup("Request", "xt-1", &py_login_request(&digest_b64(b"wrong")));
    assert_eq!(raw_post(&p, ct, &wrong).await, "");
    let right = py_setup(
        "Request",
        "xt-1",
        &py_login_request(&digest_b64(token1.as_bytes())),
    );
    assert_eq!(raw_post(&p, ct, &right).await, "");
    assert!(
        p.wire_log()
            .iter()
            .any(|e| e.direction == WireDirection::Closed && e.raw.contains("wrong digest"))
    );

    // A good association, with a base64-encoded SecretToken this time.
    let sst = py_setup(
        "Request",
        "xt-2",
        &py_token(&format!(
            "<SecretToken encoding=\"base64\">{}</SecretToken>",
            B64.encode("sekrit-x")
        )),
    );
    assert!(raw_post(&p, ct, &sst).await.ends_with(OK_CLOSE));
    let token2 = token_sent(&p, 2).await;
    let login = py_setup(
        "Request",
        "xt-2",
        &py_login_request(&digest_b64(token2.as_bytes())),
    );
    assert!(raw_post(&p, ct, &login).await.ends_with(OK_CLOSE));
    sent(
        &p,
        &[
            "<SetupTransaction transactionID=\"xt-2\" mode=\"Response\">\n<LoginRequest serviceID=\"wv:@b.test\"",
            &format!("\n{}\n</PasswordDigest>", kannel_b64(&Md5::digest(b"sekrit-x"))),
        ],
    )
    .await;
    let login_response = py_setup(
        "Request",
        "xt-2",
        "<LoginResponse sessionID=\"xs-1@x.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n</LoginResponse>",
    );
    assert!(raw_post(&p, ct, &login_response).await.ends_with(OK_CLOSE));
    sent(
        &p,
        &["mode=\"Response\">\n<LoginResponse sessionID=\"2@b.test\" timeToLive=\"86400\">"],
    )
    .await;

    // P1: Baraza's own session ID is refused.
    let own = py_im("2@b.test", "m-1", "wv:carol@x.test", "wv:bob@b.test", "x");
    assert_eq!(raw_post(&p, ct, &own).await, "");
    // Delivery by MSISDN; the answer comes async under p's session ID.
    let im = py_im(
        "xs-1@x.test",
        "m-2",
        "wv:carol@x.test",
        "wv:+4930123456@b.test",
        "hello bob",
    );
    assert!(raw_post(&p, ct, &im).await.ends_with(OK_CLOSE));
    assert_eq!(
        p.wait_received(1, DEADLINE).await.unwrap(),
        [ReceivedMessage {
            to_local: "bob".into(),
            from_id: "wv:carol@x.test".into(),
            text: "hello bob".into(),
        }]
    );
    sent(
        &p,
        &[
            "\r\nx-wv-sessionid: xs-1@x.test\r\n",
            "<Session sessionID=\"2@b.test\">\n<Transaction mode=\"Response\" transactionID=\"m-2\">\n<SendMessageResponse messageID=\"",
            "<StatusDescription>Success</StatusDescription>",
        ],
    )
    .await;
    // P3: a sender outside x.test.
    let im = py_im(
        "xs-1@x.test",
        "m-3",
        "wv:mallory@c.test",
        "wv:bob@b.test",
        "x",
    );
    assert!(raw_post(&p, ct, &im).await.ends_with(OK_CLOSE));
    sent(
        &p,
        &["transactionID=\"m-3\">\n<Status code=\"901\"/>\n</Transaction>"],
    )
    .await;
    // P2: an unknown recipient.
    let im = py_im(
        "xs-1@x.test",
        "m-4",
        "wv:carol@x.test",
        "wv:nobody@b.test",
        "x",
    );
    assert!(raw_post(&p, ct, &im).await.ends_with(OK_CLOSE));
    sent(
        &p,
        &["transactionID=\"m-4\">\n<SendMessageResponse messageID=\"\">\n<Status code=\"900\">\n<StatusDescription>Errors</StatusDescription>\n<DetailedResult code=\"427\">\n<StatusDescription>invalid userid: nobody@b.test</StatusDescription>"],
    )
    .await;
    assert_eq!(p.received().len(), 1);
    // The sink dropped p's unsolicited posts without any response.
    assert!(
        sink.wire_log()
            .iter()
            .any(|e| e.direction == WireDirection::Closed)
    );
    p.shutdown().await;
    sink.shutdown().await;
}
