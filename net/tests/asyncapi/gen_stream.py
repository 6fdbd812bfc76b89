#!/usr/bin/env python3
"""Writes net/web/asyncapi-stream.json, the AsyncAPI 3.0 document of /v1/stream, from the channel catalog
(core/src/channel.rs) and the examples of docs/protocol.md. Run from the repository root after either changes;
net/tests/docs.rs fails while the document and docs/protocol.md disagree."""
import re, json
s=open('core/src/channel.rs').read()
chans=[]
for m in re.finditer(r'ChannelInfo \{\n\s+channel: Channel::\w+,(.*?)\n    \}', s, re.S):
    b=m.group(1)+"\n"
    g=lambda k: re.search(k+r': (.*?),\n', b).group(1)
    chans.append(dict(name=json.loads(g('name')), type=json.loads(g('update_type')), scope=g('scope').split('::')[1],
      critical=g('critical')=='true', snapshot=g('snapshot')=='true',
      fields=re.findall(r'"(\w+)"', g('fields')), description=json.loads(g('description'))))
assert chans[0]['name']=='quotes', chans[0]
p=open('docs/protocol.md').read()
blocks=re.findall(r"```(json[^\n]*)\n(.*?)```", p, re.S)
clients=[json.loads(b) for t,b in blocks if t=='json client']
servers=[json.loads(b) for t,b in blocks if t=='json server']
names=[c['name'] for c in chans]
S=lambda t: {"type":t}
string, integer = S("string"), S("integer")
ts={"type":"string","description":"RFC 3339 UTC with microseconds","format":"date-time"}
idp={"type":"string","maxLength":64,"description":"The request's id, echoed in its reply"}
def obj(props, required, desc=None):
    o={"type":"object","properties":props,"required":required}
    if desc: o["description"]=desc
    return o
channel_enum={"type":"string","enum":names}
msgs={}; ops={}
def example_list(pred, pool):
    return [{"name":f"example {i+1}","payload":e} for i,e in enumerate([e for e in pool if pred(e)])]
def add(key, name, schema, summary, examples):
    m={"name":name,"title":name,"summary":summary,"payload":schema}
    if examples: m["examples"]=examples
    msgs[key]=m
add("subscribe","subscribe",obj({"action":{"const":"subscribe"},"id":idp,"channel":channel_enum,
    "symbols":{"type":"array","items":string,"description":"Per-symbol channels: the symbols (none, for news: all)"},
    "throttle_ms":{"type":"integer","minimum":0,"maximum":60000,"description":"At most one update per window per topic, the latest"},
    "interval":{"type":"string","enum":["1s","1m","5m","15m","30m","1h","1d","1w","1mo"],"default":"1m","description":"Bars only"},
    "from_sequence":{"type":"object","additionalProperties":{"type":"integer","minimum":0},"description":"Resume: symbol (or * for keyless topics) to the last sequence the client has"},
    "epoch":{"type":"string","description":"The epoch of the welcome the resume points belong to"},
    "restore":{"type":"boolean","description":"Also bring back this user's and client id's stored subscriptions"}},["action","channel"]),
    "Subscribe to a channel's topics", example_list(lambda e:e.get("action")=="subscribe", clients))
add("unsubscribe","unsubscribe",obj({"action":{"const":"unsubscribe"},"id":idp,"channel":channel_enum,
    "symbols":{"type":"array","items":string},"interval":{"type":"string"}},["action","channel"]),
    "Stop topics of a channel (no symbols: the whole channel)", example_list(lambda e:e.get("action")=="unsubscribe", clients))
add("ping","ping",obj({"action":{"const":"ping"},"id":idp},["action"]),"Application-level ping",
    example_list(lambda e:e.get("action")=="ping", clients))
add("ack","ack",obj({"action":{"const":"ack"},"id":idp,"channel":{"type":"string","enum":[c['name'] for c in chans if c['critical']]},
    "sequence":{"type":"integer","minimum":0}},["action","channel","sequence"]),
    "Acknowledge a critical channel's messages up to a sequence", example_list(lambda e:e.get("action")=="ack", clients))
sv=lambda t: example_list(lambda e:e.get("type")==t, servers)
add("welcome","welcome",obj({"type":{"const":"welcome"},"connection_id":string,"client_id":string,"user_id":{"type":["string","null"]},
    "epoch":string,"heartbeat_s":integer,"protocol":{"const":1},"timestamp":ts},["type","connection_id","client_id","user_id","epoch","heartbeat_s","protocol","timestamp"]),
    "The first frame of every connection", sv("welcome"))
add("subscribed","subscribed",obj({"type":{"const":"subscribed"},"id":idp,"channel":channel_enum,"symbols":{"type":"array","items":string},
    "interval":string,"throttle_ms":integer,"subscription_id":string},["type","channel","symbols","throttle_ms","subscription_id"]),
    "A subscribe's reply", sv("subscribed"))
add("unsubscribed","unsubscribed",obj({"type":{"const":"unsubscribed"},"id":idp,"channel":channel_enum,"symbols":{"type":"array","items":string}},
    ["type","channel","symbols"]),"An unsubscribe's reply", sv("unsubscribed"))
add("pong","pong",obj({"type":{"const":"pong"},"id":idp,"timestamp":ts},["type","timestamp"]),"A ping's reply", sv("pong"))
add("error","error",obj({"type":{"const":"error"},"id":idp,"code":{"type":"string","enum":["INVALID_JSON","INVALID_MESSAGE","UNKNOWN_ACTION","UNKNOWN_CHANNEL","INVALID_FIELD","INVALID_SYMBOL","UNSUPPORTED_DATA","AUTH_REQUIRED","SUBSCRIPTION_LIMIT","UNAVAILABLE","RATE_LIMITED","QUEUE_OVERFLOW"]},
    "message":string,"timestamp":ts},["type","code","message","timestamp"]),"A request the server cannot act on (the connection stays open)", sv("error"))
add("reset","reset",obj({"type":{"const":"reset"},"channel":channel_enum,"symbol":string,
    "reason":{"type":"string","enum":["history_unavailable","sequence_ahead","epoch_changed"]}},["type","channel","reason"]),
    "A resume that cannot be served: a snapshot follows", sv("reset"))
add("snapshot","snapshot",obj({"type":{"const":"snapshot"},"channel":channel_enum,"sequence":integer,"timestamp":ts,"source_ts":{},"data":{"type":"object"}},
    ["type","channel","sequence","timestamp","data"]),"A topic's latest state, first for a new subscriber of a state channel", sv("snapshot"))
for c in chans:
    data=obj({f:{} for f in c['fields']},[],"Fields: "+", ".join(c['fields']))
    props={"type":{"const":c['type']},"channel":{"const":c['name']},"sequence":{"type":"integer","description":"Per topic, from 1, no gaps"},
      "timestamp":ts,"source_ts":{"description":"The publisher's source_ts, as it came"},"data":data}
    if c['name']=='orders': props["signature"]={"type":"string","description":"Ed25519 signature of data (base64), key at /api/ws/signing-key"}
    summ=c['description']+(" (critical: delivered at least once, acknowledge with ack)" if c['critical'] else "")
    add("update_"+c['name'],c['type'],obj(props,["type","channel","sequence","timestamp","data"]),summ,
        example_list(lambda e,c=c:e.get("type")==c['type'] and e.get("channel")==c['name'], servers))
ref=lambda k: {"$ref":f"#/channels/stream/messages/{k}"}
ch={"$ref":"#/channels/stream"}
ops["subscribe"]={"action":"receive","channel":ch,"summary":"Subscribe","messages":[ref("subscribe")],
   "reply":{"channel":ch,"messages":[ref("subscribed"),ref("error")]}}
ops["unsubscribe"]={"action":"receive","channel":ch,"summary":"Unsubscribe","messages":[ref("unsubscribe")],
   "reply":{"channel":ch,"messages":[ref("unsubscribed"),ref("error")]}}
ops["ping"]={"action":"receive","channel":ch,"summary":"Ping","messages":[ref("ping")],
   "reply":{"channel":ch,"messages":[ref("pong")]}}
ops["ack"]={"action":"receive","channel":ch,"summary":"Acknowledge critical messages","messages":[ref("ack")]}
ops["welcome"]={"action":"send","channel":ch,"summary":"On connect","messages":[ref("welcome")]}
ops["notices"]={"action":"send","channel":ch,"summary":"Errors no request caused, and resets","messages":[ref("error"),ref("reset")]}
ops["updates"]={"action":"send","channel":ch,"summary":"Snapshots and updates of subscribed topics",
   "messages":[ref("snapshot")]+[ref("update_"+c['name']) for c in chans]}
doc={"asyncapi":"3.0.0",
 "info":{"title":"tickwire /v1/stream (the canonical protocol v1)","version":"1.0.0",
   "description":"Market data and private trading events over WebSocket: subscribe to channels' topics, receive sequenced updates (per topic, from 1, no gaps), resume after a reconnect with from_sequence and epoch, acknowledge critical messages. The contract is docs/protocol.md; this document carries exactly its examples (a test keeps the two equal, and every example is checked against a live server). Authenticate with a JWT in the Authorization header or ?token=."},
 "servers":{"local":{"host":"localhost:8080","protocol":"ws","pathname":"/v1/stream","description":"tickwire's default listen address"}},
 "defaultContentType":"application/json",
 "channels":{"stream":{"address":"/v1/stream","messages":{k:{"$ref":f"#/components/messages/{k}"} for k in msgs}}},
 "operations":ops,
 "components":{"messages":msgs}}
open('net/web/asyncapi-stream.json','w').write(json.dumps(doc,indent=2)+"\n")
n_ex=sum(len(m.get("examples",[])) for m in msgs.values())
print(len(msgs),"messages", n_ex, "examples of", len(clients)+len(servers))
