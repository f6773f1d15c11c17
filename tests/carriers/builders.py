"""Request builders for every upload shape in upload-shapes.md, plus body checks.

Each builder takes the image bytes and returns a `Shape`: the request as the service's
client sends it, and what the request declares about the file (sizes), so tests can
assert those declarations stay true after the rewrite.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
import zlib
from dataclasses import dataclass, field
from urllib.parse import quote

from exifguard import sniff

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIC": "image/heic",
        "GIF": "image/gif"}
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIC": "heic", "GIF": "gif"}


@dataclass
class Shape:
    name: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    images: int = 1
    # declared sizes that must stay true: (description, declared value, "body" | "image")
    declared: list[tuple[str, int, str]] = field(default_factory=list)
    # a preceding request (e.g. ChatGPT create JSON) that must pass byte-identical
    before: tuple[str, str, list[tuple[str, str]], bytes] | None = None


def mime(img: bytes) -> str:
    return MIME.get(sniff(img) or "", "application/octet-stream")


def fname(img: bytes, stem: str = "IMG_20240512_142233") -> str:
    return f"{stem}.{EXT.get(sniff(img) or '', 'bin')}"


def data_url(img: bytes) -> str:
    return f"data:{mime(img)};base64," + base64.b64encode(img).decode()


def multipart(parts: list[tuple[str, bytes]], boundary: str, crlf: bytes = b"\r\n",
              preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """parts: (raw header block without trailing line break, payload)."""
    out = [preamble]
    for headers, payload in parts:
        out += [b"--", boundary.encode(), crlf, headers.encode().replace(b"\n", crlf), crlf, crlf,
                payload, crlf]
    out += [b"--", boundary.encode(), b"--", crlf, epilogue]
    return b"".join(out)


def file_part(name: str, img: bytes, filename: str | None = None) -> tuple[str, bytes]:
    filename = filename or fname(img)
    return (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\n'
            f"Content-Type: {mime(img)}", img)


def field_part(name: str, value: str | bytes) -> tuple[str, bytes]:
    v = value.encode() if isinstance(value, str) else value
    return f'Content-Disposition: form-data; name="{name}"', v


def _mp(name: str, url: str, parts: list[tuple[str, bytes]], extra: list[tuple[str, str]] = (),
        boundary: str | None = None, images: int = 1, declared=None) -> Shape:
    boundary = boundary or "----WebKitFormBoundary" + uuid.uuid4().hex[:16]
    body = multipart(parts, boundary)
    return Shape(name, "POST", url, [("Content-Type", f"multipart/form-data; boundary={boundary}"),
                                     *extra], body, images, declared or [])


def chatgpt(img: bytes) -> Shape:
    create = json.dumps({"file_name": fname(img), "file_size": len(img), "use_case": "multimodal",
                         "timezone_offset_min": -120}).encode()
    url = ("https://files.oaiusercontent.com/file-" + "a" * 24 + "/raw?se=2030-01-01&sp=w&sv=2024-08-04"
           "&sr=b&sig=c2lnbmF0dXJl")
    s = Shape("chatgpt_put", "PUT", url, [("Content-Type", mime(img)), ("x-ms-blob-type", "BlockBlob"),
                                           ("x-ms-version", "2020-04-08")], img,
              declared=[("file_size (create JSON)", len(img), "body")])
    s.before = ("POST", "https://chatgpt.com/backend-api/files", [("Content-Type", "application/json")], create)
    return s


def claude(img: bytes) -> Shape:
    return _mp("claude_multipart", "https://claude.ai/api/organizations/o/conversations/c/wiggle/upload-file",
               [file_part("file", img)])


def gemini_web(img: bytes) -> Shape:
    start_headers = [("x-goog-upload-protocol", "resumable"), ("x-goog-upload-command", "start"),
                     ("x-goog-upload-header-content-length", str(len(img))), ("push-id", "feeds/mcudyrk2a4khkz"),
                     ("x-tenant-id", "bard-storage"), ("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8")]
    s = Shape("gemini_resumable", "POST",
              "https://content-push.googleapis.com/upload/?upload_id=ABC123&upload_protocol=resumable",
              [("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8"),
               ("x-goog-upload-command", "upload, finalize"), ("x-goog-upload-offset", "0"),
               ("push-id", "feeds/mcudyrk2a4khkz")], img,
              declared=[("x-goog-upload-header-content-length (start)", len(img), "body")])
    s.before = ("POST", "https://content-push.googleapis.com/upload/", start_headers,
                f"File name: {fname(img)}".encode())
    return s


def copilot(img: bytes) -> Shape:
    return Shape("copilot_raw", "POST", "https://copilot.microsoft.com/c/api/attachments",
                 [("Content-Type", mime(img))], img)


def m365_form(img: bytes) -> Shape:
    body = ("scenario=UploadImage&conversationId=" + str(uuid.uuid4()) +
            "&optionsSets=%5B%22cwc_flux_image%22%5D&FileBase64=" + quote(data_url(img), safe=""))
    return Shape("m365_form", "POST", "https://substrate.office.com/m365Copilot/UploadFile",
                 [("Content-Type", "application/x-www-form-urlencoded")], body.encode())


def m365_multipart(img: bytes) -> Shape:
    return _mp("m365_multipart", "https://substrate.office.com/m365Copilot/UploadFile",
               [field_part("scenario", "UploadImage"), field_part("conversationId", str(uuid.uuid4())),
                field_part("FileBase64", data_url(img)), field_part("optionsSets", '["cwc_flux_image"]')])


def perplexity_s3(img: bytes) -> Shape:
    policy = base64.b64encode(json.dumps({"expiration": "2030-01-01T00:00:00Z", "conditions": [
        {"bucket": "ppl-ai-file-upload"}, ["content-length-range", 0, 52428800]]}).encode()).decode()
    fields = [("key", "user/abc/" + fname(img)), ("Content-Type", mime(img)),
              ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
              ("x-amz-credential", "AKIAEXAMPLE/20300101/us-east-1/s3/aws4_request"),
              ("x-amz-date", "20300101T000000Z"), ("policy", policy), ("x-amz-signature", "ab" * 32)]
    return _mp("perplexity_s3", "https://ppl-ai-file-upload.s3.amazonaws.com/",
               [field_part(k, v) for k, v in fields] + [file_part("file", img)])


def cloudinary(img: bytes) -> Shape:
    fields = [("api_key", "123456789012345"), ("timestamp", "1900000000"), ("folder", "user_uploads"),
              ("signature", "0" * 40)]
    return _mp("perplexity_cloudinary", "https://api.cloudinary.com/v1_1/pplx/image/upload",
               [field_part(k, v) for k, v in fields] + [file_part("file", img)])


def deepseek(img: bytes) -> Shape:
    return _mp("deepseek_multipart", "https://chat.deepseek.com/api/v0/file/upload_file",
               [file_part("file", img)], [("x-file-size", str(len(img))), ("x-ds-pow-response", "eyJhIjoxfQ==")],
               declared=[("x-file-size", len(img), "image")])


def grok_v2(img: bytes) -> Shape:
    return _mp("grok_multipart", "https://grok.com/http/upload-file-v2/direct",
               [file_part("file", img), field_part("file_source", "SELF_UPLOAD_FILE_SOURCE")])


def grok_legacy(img: bytes) -> Shape:
    body = json.dumps({"fileName": fname(img), "fileMimeType": mime(img),
                       "content": base64.b64encode(img).decode()}).encode()
    return Shape("grok_legacy_json", "POST", "https://grok.com/rest/app-chat/upload-file",
                 [("Content-Type", "application/json")], body)


def lechat_azure(img: bytes) -> Shape:
    md5 = base64.b64encode(hashlib.md5(img).digest()).decode()
    return Shape("lechat_azure_put", "PUT",
                 "https://mistralaichatupprodswe.blob.core.windows.net/chat-images/x/y.jpg?sv=2024&sig=abc",
                 [("Content-Type", "application/octet-stream"), ("x-ms-blob-type", "BlockBlob"),
                  ("Content-MD5", md5), ("x-ms-blob-content-md5", md5)], img)


def meta_rupload(img: bytes) -> Shape:
    return Shape("meta_rupload", "POST", "https://rupload.meta.ai/gen_ai_document_gen_ai_tenant/" + str(uuid.uuid4()),
                 [("Authorization", "OAuth abc"), ("offset", "0"), ("x-entity-length", str(len(img))),
                  ("x-entity-name", quote(fname(img))), ("x-entity-type", mime(img)),
                  ("Content-Type", "application/octet-stream")], img,
                 declared=[("x-entity-length", len(img), "body")])


def poe_graphql(img: bytes) -> Shape:
    ops = json.dumps({"queryName": "sendMessageMutation", "variables": {"chatId": 1, "query": "what is this?",
                      "attachments": ["0"], "file": None}, "extensions": {"hash": "f" * 64}})
    return _mp("poe_graphql", "https://poe.com/api/gql_upload_POST",
               [field_part("operations", ops), field_part("map", '{"0":["variables.file"]}'),
                file_part("0", img)], [("poe-tag-id", "0" * 32)])


def huggingchat(img: bytes) -> Shape:
    data = json.dumps({"inputs": "describe", "id": str(uuid.uuid4()), "is_retry": False})
    b64 = base64.b64encode(img).decode()
    return _mp("huggingchat_base64", "https://huggingface.co/chat/conversation/66a1",
               [field_part("data", data),
                (f'Content-Disposition: form-data; name="files"; filename="base64;{fname(img)}"\n'
                 f"Content-Type: {mime(img)}", b64.encode())])


def huggingchat_named(img: bytes) -> Shape:
    """Variant where the part *name* is ``base64;<name>`` (as the doc describes)."""
    b64 = base64.b64encode(img).decode()
    return _mp("huggingchat_base64_name", "https://huggingface.co/chat/conversation/66a1",
               [field_part("data", '{"inputs":"hi"}'),
                (f'Content-Disposition: form-data; name="base64;{fname(img)}"\nContent-Type: {mime(img)}',
                 b64.encode())])


def _api(name: str, url: str, doc: dict, images: int = 1, indent: int | None = None) -> Shape:
    body = json.dumps(doc, indent=indent).encode()
    return Shape(name, "POST", url, [("Content-Type", "application/json"), ("Authorization", "Bearer sk-test")],
                 body, images)


def openai_chat(img: bytes) -> Shape:
    return _api("openai_chat", "https://api.openai.com/v1/chat/completions", {
        "model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": data_url(img), "detail": "high"}}]}]})


def openai_responses(img: bytes) -> Shape:
    return _api("openai_responses", "https://api.openai.com/v1/responses", {
        "model": "gpt-4.1", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "describe"},
            {"type": "input_image", "image_url": data_url(img)}]}]}, indent=2)


def anthropic(img: bytes) -> Shape:
    return _api("anthropic_messages", "https://api.anthropic.com/v1/messages", {
        "model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": mime(img),
                                         "data": base64.b64encode(img).decode()}},
            {"type": "text", "text": "Describe this image."}]}]})


def gemini_api(img: bytes) -> Shape:
    b64 = base64.b64encode(img).decode()
    return _api("gemini_generate", "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
                ":generateContent", {"contents": [{"parts": [
                    {"inline_data": {"mime_type": mime(img), "data": b64}},
                    {"inlineData": {"mimeType": mime(img), "data": b64}},
                    {"text": "Caption this image."}]}]}, images=2)


def mistral_api(img: bytes) -> Shape:
    return _api("mistral_chat", "https://api.mistral.ai/v1/chat/completions", {
        "model": "pixtral-12b", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What's in this image?"},
            {"type": "image_url", "image_url": data_url(img)}]}]})


def openai_files(img: bytes) -> Shape:
    return _mp("openai_files_multipart", "https://api.openai.com/v1/files",
               [field_part("purpose", "vision"), file_part("file", img)],
               [("Authorization", "Bearer sk-test")])


# ---- services added in upload-shapes.md §9 (2026 update) ---------------------------------------
def qwen_oss_put(img: bytes) -> Shape:
    """Qwen Chat: STS token JSON on chat.qwen.ai (name and size, no bytes), then a PUT to the OSS
    bucket with OSS4-HMAC-SHA256 and an unsigned payload (Content-MD5 as the browser SDK may add)."""
    md5 = base64.b64encode(hashlib.md5(img).digest()).decode()
    auth = ("OSS4-HMAC-SHA256 Credential=STS.NExample/20260101/ap-southeast-1/oss/aliyun_v4_request,"
            "AdditionalHeaders=host,Signature=" + "ab" * 32)
    s = Shape("qwen_oss_put", "PUT", "https://qwen-webui-prod.oss-accelerate.aliyuncs.com/user/abc/" + fname(img),
              [("Content-Type", mime(img)), ("Authorization", auth), ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
               ("x-oss-date", "20260101T000000Z"), ("x-oss-security-token", "CAIS" + "x" * 40),
               ("Content-MD5", md5), ("Origin", "https://chat.qwen.ai")], img,
              declared=[("filesize (getstsToken JSON)", len(img), "body")])
    s.before = ("POST", "https://chat.qwen.ai/api/v2/files/getstsToken", [("Content-Type", "application/json")],
                json.dumps({"filename": fname(img), "filesize": len(img), "filetype": "image"}).encode())
    return s


def sora_multipart(img: bytes) -> Shape:
    return _mp("sora_multipart", "https://sora.chatgpt.com/backend/project_y/file/upload",
               [file_part("file", img), field_part("use_case", "inpaint_safe")],
               [("Origin", "https://sora.chatgpt.com"), ("Authorization", "Bearer eyJ0")])


def notebooklm_resumable(img: bytes) -> Shape:
    """NotebookLM: a JSON start naming project and source, then upload, finalize on the same origin."""
    start = json.dumps({"PROJECT_ID": "p-123", "SOURCE_NAME": fname(img), "SOURCE_ID": "s-456"}).encode()
    s = Shape("notebooklm_resumable", "POST",
              "https://notebooklm.google.com/upload/_/?authuser=0&upload_id=AU_abc&upload_protocol=resumable",
              [("Content-Type", "application/x-www-form-urlencoded;charset=utf-8"),
               ("x-goog-upload-command", "upload, finalize"), ("x-goog-upload-offset", "0")], img,
              declared=[("x-goog-upload-header-content-length (start)", len(img), "body")])
    s.before = ("POST", "https://notebooklm.google.com/upload/_/?authuser=0",
                [("Content-Type", "application/x-www-form-urlencoded;charset=utf-8"),
                 ("x-goog-upload-protocol", "resumable"), ("x-goog-upload-command", "start"),
                 ("x-goog-upload-header-content-length", str(len(img)))], start)
    return s


def zai_multipart(img: bytes) -> Shape:
    return _mp("zai_multipart", "https://chat.z.ai/api/v1/files/", [file_part("file", img)],
               [("Authorization", "Bearer eyJ0"), ("Origin", "https://chat.z.ai")])


def _doubao(name: str, img: bytes, crc: str) -> Shape:
    return Shape(name, "POST", "https://tos-d-x-hl.snssdk.com/upload/v1/tos-cn-i-a9rns2rl98/" + uuid.uuid4().hex,
                 [("Authorization", "SpaceKey/rc0rgsyemh/1/:version:v2:" + "e" * 40),
                  ("Content-Type", "application/octet-stream"), ("Content-CRC32", crc),
                  ("Content-Disposition", 'attachment; filename="undefined"'), ("X-Storage-U", "1234"),
                  ("Origin", "https://www.doubao.com"), ("Referer", "https://www.doubao.com/chat/")], img,
                 declared=[("FileSize (ApplyImageUpload)", len(img), "body")])


def doubao_tos_hex(img: bytes) -> Shape:
    """Doubao/Dola: ApplyImageUpload, then the bytes with Content-CRC32 as 8 lower-case hex digits."""
    return _doubao("doubao_tos_crc_hex", img, f"{zlib.crc32(img):08x}")


def doubao_tos_decimal(img: bytes) -> Shape:
    """Same upload as some clients spell it: the CRC-32 in decimal."""
    return _doubao("doubao_tos_crc_decimal", img, str(zlib.crc32(img)))


def yuanbao_cos_put(img: bytes) -> Shape:
    return Shape("yuanbao_cos_put", "PUT",
                 "https://hunyuan-prod-1258344703.cos.accelerate.myqcloud.com/chat/" + fname(img) +
                 "?q-sign-algorithm=sha1&q-ak=AKID&q-sign-time=1&q-key-time=1&q-header-list=host"
                 "&q-url-param-list=&q-signature=" + "0" * 40,
                 [("Content-Type", mime(img)), ("Origin", "https://yuanbao.tencent.com")], img,
                 declared=[("fileSize (genUploadInfo)", len(img), "body")])


def kimi_tos_put(img: bytes) -> Shape:
    return Shape("kimi_tos_put", "PUT",
                 "https://prod-chat-kimi.tos-s3-cn-beijing.volces.com/" + uuid.uuid4().hex +
                 "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20240101%2Fcn-beijing%2Fs3%2Faws4_request"
                 "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "f" * 64,
                 [("Content-Type", mime(img)), ("Origin", "https://www.kimi.com")], img)


def genspark_blob_put(img: bytes) -> Shape:
    md5 = base64.b64encode(hashlib.md5(img).digest()).decode()
    return Shape("genspark_blob_put", "PUT",
                 "https://gensparkstorageprodwest.blob.core.windows.net/personal/u1/file_upload/" + uuid.uuid4().hex +
                 "?sv=2023-11-03&sr=b&sp=cw&sig=c2ln",
                 [("x-ms-blob-type", "BlockBlob"), ("Content-Type", mime(img)), ("Content-MD5", md5),
                  ("Origin", "https://www.genspark.ai")], img)


def genspark_convert_heic(img: bytes) -> Shape:
    """The HEIC conversion request (raw bytes to www.genspark.ai); any format is checked the same way."""
    return Shape("genspark_convert_heic", "POST", "https://www.genspark.ai/convert-heic",
                 [("Content-Type", mime(img)), ("Origin", "https://www.genspark.ai")], img)


def genspark_agent_json(img: bytes) -> Shape:
    return _api("genspark_agent_ask", "https://www.genspark.ai/api/agent/ask", {
        "type": "super_agent", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(img)}},
            {"type": "text", "text": "what is this?"}]}]})


def meta_vibes(img: bytes) -> Shape:
    return _mp("meta_vibes_multipart", "https://vibes.ai/api/upload-media",
               [file_part("file", img), field_part("filename", fname(img))], [("Origin", "https://vibes.ai")])


def grok_x_attachment(img: bytes) -> Shape:
    """Grok inside x.com (opt-in service grok-x)."""
    return _mp("grok_x_attachment", "https://x.com/i/api/2/grok/attachment.json", [file_part("file", img)],
               [("x-csrf-token", "0" * 32), ("Authorization", "Bearer AAAA")])


NEW_SHAPES = [qwen_oss_put, sora_multipart, notebooklm_resumable, zai_multipart, doubao_tos_hex,
              doubao_tos_decimal, yuanbao_cos_put, kimi_tos_put, genspark_blob_put, genspark_convert_heic,
              genspark_agent_json, meta_vibes, grok_x_attachment]

SHAPES = [chatgpt, claude, gemini_web, copilot, m365_form, m365_multipart, perplexity_s3, cloudinary,
          deepseek, grok_v2, grok_legacy, lechat_azure, meta_rupload, poe_graphql, huggingchat,
          huggingchat_named, openai_chat, openai_responses, anthropic, gemini_api, mistral_api, openai_files,
          *NEW_SHAPES]
