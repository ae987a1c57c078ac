"""HTTP contract of localpiston against docs/piston.md: shapes, status codes, error bodies."""

from __future__ import annotations

import base64
import json
import re

import pytest
import requests

from .conftest import Server


def test_root_answers_piston_version(piston: Server) -> None:
    response = requests.get(piston.url + "/", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"message": "Piston v3.1.1"}


def test_runtimes_lists_python_with_aliases_and_real_interpreter_version(piston: Server) -> None:
    response = requests.get(piston.url + "/api/v2/runtimes", timeout=5)
    assert response.status_code == 200
    [runtime] = response.json()
    assert set(runtime) == {"language", "version", "aliases"}
    assert runtime["language"] == "python"
    assert runtime["aliases"] == ["py", "py3", "python3"]
    assert re.fullmatch(r"3\.\d+\.\d+", runtime["version"])
    run = piston.run("import sys; print('%d.%d.%d' % sys.version_info[:3])")
    assert run["stdout"] == runtime["version"] + "\n"


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("GET", "/api/v2/execute"), ("GET", "/api/v2/connect")])
def test_unknown_route_is_404_not_found(piston: Server, method: str, path: str) -> None:
    response = requests.request(method, piston.url + path, timeout=5)
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


def test_execute_returns_newer_result_shape(piston: Server) -> None:
    response = piston.execute("print('hi')")
    assert response.status_code == 200
    body = response.json()
    assert body["language"] == "python"
    assert "compile" not in body
    run = body["run"]
    assert set(run) == {"stdout", "stderr", "output", "code", "signal", "message", "status", "cpu_time", "wall_time", "memory"}
    assert (run["stdout"], run["stderr"], run["output"], run["code"], run["signal"]) == ("hi\n", "", "hi\n", 0, None)
    assert run["status"] is None and run["message"] is None
    assert isinstance(run["cpu_time"], int | float) and isinstance(run["wall_time"], int | float)
    assert isinstance(run["memory"], int) and run["memory"] > 0


@pytest.mark.parametrize("language", ["python", "py", "py3", "python3"])
def test_language_accepts_name_and_aliases(piston: Server, language: str) -> None:
    assert piston.execute("print(1)", language=language).status_code == 200


@pytest.mark.parametrize("version", ["*", "3.x", "3", ">=3.0.0", "^3"])
def test_version_is_a_semver_range(piston: Server, version: str) -> None:
    assert piston.execute("print(1)", version=version).status_code == 200


def test_exact_interpreter_version_matches(piston: Server) -> None:
    version = requests.get(piston.url + "/api/v2/runtimes", timeout=5).json()[0]["version"]
    assert piston.execute("print(1)", version=version).status_code == 200


@pytest.mark.parametrize(("language", "version"), [("python", "9"), ("python", "latest"), ("ruby", "*"), ("python", "2.x")])
def test_unknown_runtime_is_400_with_language_dash_version(piston: Server, language: str, version: str) -> None:
    response = piston.execute("print(1)", language=language, version=version)
    assert response.status_code == 400
    assert response.json() == {"message": f"{language}-{version} runtime is unknown"}


FILES = [{"content": "print(1)"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"version": "*", "files": FILES}, "language is required as a string"),
        ({"language": 5, "version": "*", "files": FILES}, "language is required as a string"),
        ({"language": "python", "files": FILES}, "version is required as a string"),
        ({"language": "python", "version": 3, "files": FILES}, "version is required as a string"),
        ({"language": "python", "version": "*"}, "files is required as an array"),
        ({"language": "python", "version": "*", "files": {"content": "x"}}, "files is required as an array"),
        (
            {"language": "python", "version": "*", "files": [{"content": "x"}, {"name": "a"}]},
            "files[1].content is required as a string",
        ),
        ({"language": "python", "version": "*", "files": [{"content": 5}]}, "files[0].content is required as a string"),
        ({"language": "python", "version": "*", "files": []}, "files must include at least one utf8 encoded file"),
        (
            {"language": "python", "version": "*", "files": [{"content": "eA==", "encoding": "base64"}]},
            "files must include at least one utf8 encoded file",
        ),
        (
            {"language": "python", "version": "*", "files": [{"content": "x", "encoding": "latin1"}]},
            "files must include at least one utf8 encoded file",
        ),
        (
            {"language": "python", "version": "*", "files": FILES, "run_timeout": "100"},
            "If specified, run_timeout must be a number",
        ),
        ({"language": "python", "version": "*", "files": FILES, "run_timeout": -5}, "run_timeout must be non-negative"),
        (
            {"language": "python", "version": "*", "files": FILES, "run_timeout": 3001},
            "run_timeout cannot exceed the configured limit of 3000",
        ),
        (
            {"language": "python", "version": "*", "files": FILES, "run_cpu_time": 3001},
            "run_cpu_time cannot exceed the configured limit of 3000",
        ),
        (
            {"language": "python", "version": "*", "files": FILES, "compile_timeout": 10001},
            "compile_timeout cannot exceed the configured limit of 10000",
        ),
        (
            {"language": "python", "version": "*", "files": FILES, "run_memory_limit": "1"},
            "If specified, run_memory_limit must be a number",
        ),
    ],
)
def test_invalid_request_is_400_with_pistons_message(piston: Server, body: dict[str, object], message: str) -> None:
    response = requests.post(piston.url + "/api/v2/execute", json=body, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"message": message}


@pytest.mark.parametrize("stdin", [5, True, {"a": 1}])
def test_non_string_stdin_is_400_with_empty_object(piston: Server, stdin: object) -> None:
    response = piston.execute("print(1)", stdin=stdin)
    assert response.status_code == 400
    assert response.json() == {}


def test_null_file_entry_is_400_with_empty_object(piston: Server) -> None:
    response = piston.execute(files=[None])
    assert response.status_code == 400
    assert response.json() == {}


@pytest.mark.parametrize("raw", ['{"language": ', "{'a': 1}", '"just a string"', "{}}"])
def test_malformed_json_is_400_with_syntax_error_stack_only(piston: Server, raw: str) -> None:
    response = requests.post(piston.url + "/api/v2/execute", data=raw, headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["stack"]
    assert body["stack"].startswith("SyntaxError: ")


def test_body_over_100kb_is_400_with_payload_too_large_stack(piston: Server) -> None:
    payload = json.dumps({"language": "python", "version": "*", "files": [{"content": "#" + "x" * 102_400}]})
    response = requests.post(
        piston.url + "/api/v2/execute", data=payload, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["stack"]
    assert body["stack"].startswith("PayloadTooLargeError")


def test_body_just_under_100kb_is_accepted(piston: Server) -> None:
    response = piston.execute("#" + "x" * 100_000 + "\nprint('ok')")
    assert response.status_code == 200
    assert response.json()["run"]["stdout"] == "ok\n"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(piston: Server, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    payload = json.dumps({"language": "python", "version": "*", "files": FILES})
    response = requests.post(piston.url + "/api/v2/execute", data=payload, headers=headers, timeout=5)
    assert response.status_code == 415
    assert response.json() == {"message": "requests must be of type application/json"}


@pytest.mark.parametrize("name", ["../x.py", "a/../../x.py", "..hidden"])
def test_file_name_escaping_the_folder_is_500_with_empty_body(piston: Server, name: str) -> None:
    response = piston.execute(files=[{"content": "print(1)"}, {"name": name, "content": "x"}])
    assert response.status_code == 500
    assert response.content == b""


def test_stdin_gets_a_trailing_newline(piston: Server) -> None:
    code = "import sys; print(repr(sys.stdin.read()))"
    assert piston.run(code, stdin="abc")["stdout"] == "'abc\\n'\n"
    assert piston.run(code, stdin="abc\n")["stdout"] == "'abc\\n'\n"
    assert piston.run(code)["stdout"] == "'\\n'\n"


def test_args_are_passed_after_the_entrypoint(piston: Server) -> None:
    run = piston.run("import sys; print(sys.argv)", args=["a b", "c"])
    assert run["stdout"] == "['file0.code', 'a b', 'c']\n"


def test_default_file_names_are_file_index_code(piston: Server) -> None:
    run = piston.run(
        "import os; print(sorted(os.listdir('.')))",
        files=[{"content": "import os; print(sorted(os.listdir('.')))"}, {"content": "x"}],
    )
    assert run["stdout"] == "['file0.code', 'file1.code']\n"


def test_first_utf8_file_is_the_entrypoint_and_siblings_import(piston: Server) -> None:
    files = [
        {"name": "data.bin", "content": base64.b64encode(b"\x00\x01").decode(), "encoding": "base64"},
        {"name": "main.py", "content": "import helper; print(helper.VALUE)"},
        {"name": "helper.py", "content": "VALUE = 42"},
    ]
    run = piston.run("", files=files)
    assert run["stdout"] == "42\n"


def test_sub_folder_files_are_created_and_importable(piston: Server) -> None:
    files = [
        {"name": "main.py", "content": "from pkg.sub import mod; print(mod.X, open('pkg/data.txt').read())"},
        {"name": "pkg/sub/mod.py", "content": "X = 'deep'"},
        {"name": "pkg/data.txt", "content": "txt"},
    ]
    assert piston.run("", files=files)["stdout"] == "deep txt\n"


def test_base64_and_hex_files_are_decoded(piston: Server) -> None:
    files = [
        {"name": "main.py", "content": "print(open('b.bin','rb').read(), open('h.bin','rb').read())"},
        {"name": "b.bin", "content": base64.b64encode(b"\xffbase64").decode(), "encoding": "base64"},
        {"name": "h.bin", "content": b"\xfehex".hex(), "encoding": "hex"},
    ]
    assert piston.run("", files=files)["stdout"] == "b'\\xffbase64' b'\\xfehex'\n"


def test_unknown_encoding_is_written_as_utf8(piston: Server) -> None:
    files = [
        {"name": "main.py", "content": "print(open('t.txt').read())"},
        {"name": "t.txt", "content": "plain", "encoding": "latin1"},
    ]
    assert piston.run("", files=files)["stdout"] == "plain\n"


def test_working_directory_is_the_submission_folder(piston: Server) -> None:
    run = piston.run("import os; print(os.path.basename(os.getcwd()))")
    assert run["stdout"] == "submission\n"
