"""Tool-calling chat templates written in the styles real model families ship.

Each reproduces the feature of its family that breaks a naive loss mask or parser; none is a
copy of a vendor file. Used by ``test_chat_templates.py``.
"""

from __future__ import annotations

# Qwen2.5 / Hermes-in-ChatML: tools in the system turn inside <tools>, calls as JSON in
# <tool_call> tags (arguments via tojson: a dict is expected), tool results in a user turn.
QWEN25 = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' or (m.role == 'assistant' and not m.tool_calls) %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}"
    '{% for c in m.tool_calls %}\n<tool_call>\n{"name": "{{ c.function.name }}", '
    '"arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n'
    "{% elif m.role == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "\n<tool_response>\n{{ m.content }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Llama 3.1/3.3: header tokens, tools as JSON in the first user turn, calls as bare JSON with
# "parameters", tool results under the ipython role, <|eot_id|> closes each turn.
LLAMA3_JSON = (
    "<|begin_of_text|>"
    "{% set sys = messages[0].content if messages[0].role == 'system' else '' %}"
    "<|start_header_id|>system<|end_header_id|>\n\n{{ sys }}<|eot_id|>"
    "{% set ns = namespace(done=false) %}"
    "{% for m in messages %}{% if m.role == 'system' %}{% elif m.role == 'user' %}"
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "{% if tools and not ns.done %}{% set ns.done = true %}Given the following functions, "
    "respond with a JSON function call.\n\n{% for t in tools %}{{ t | tojson(indent=4) }}\n\n"
    "{% endfor %}{% endif %}{{ m.content }}<|eot_id|>"
    "{% elif m.role == 'assistant' and m.tool_calls %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
    '{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "parameters": '
    "{{ c.function.arguments | tojson }}}{% endfor %}<|eot_id|>"
    "{% elif m.role == 'assistant' %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>"
    "{% elif m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# Mistral (v3 tokenizer): [AVAILABLE_TOOLS] only before the *last* user turn, [TOOL_CALLS] lists
# with ids that must be 9 alphanumerics (raise_exception otherwise), [TOOL_RESULTS] by call id.
MISTRAL = (
    "{% set ns = namespace(last_user=0) %}"
    "{% for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}"
    "{% endif %}{% endfor %}<s>"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}"
    "{% if tools and loop.index0 == ns.last_user %}[AVAILABLE_TOOLS]{{ tools | tojson }}"
    "[/AVAILABLE_TOOLS]{% endif %}"
    "[INST]{% if loop.index0 == ns.last_user and messages[0].role == 'system' %}"
    "{{ messages[0].content }}\n\n{% endif %}{{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' and m.tool_calls %}[TOOL_CALLS]["
    "{% for c in m.tool_calls %}"
    "{% if c.id is not string or c.id | length != 9 or not c.id.isalnum() %}"
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}"
    '{% endif %}{"name": "{{ c.function.name }}", "arguments": '
    '{{ c.function.arguments | tojson }}, "id": "{{ c.id }}"}'
    "{% if not loop.last %}, {% endif %}{% endfor %}]</s>"
    "{% elif m.role == 'assistant' %}{{ m.content }}</s>"
    "{% elif m.role == 'tool' %}"
    "{% if m.tool_call_id | length != 9 %}{{ raise_exception('bad tool_call_id') }}{% endif %}"
    '[TOOL_RESULTS]{"content": {{ m.content | tojson }}, "call_id": "{{ m.tool_call_id }}"}'
    "[/TOOL_RESULTS]{% endif %}{% endfor %}"
)

# Hermes 2 Pro style: prints function.arguments *as given* (a dict would become a Python repr),
# tool role as its own ChatML turn with <tool_response>.
HERMES = (
    "{% if tools %}<|im_start|>system\nYou are a function calling AI model. Here are the "
    "available tools: <tools> {{ tools | tojson }} </tools>\n"
    "For each call return <tool_call></tool_call> tags.<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    '{% for c in m.tool_calls %}<tool_call>\n{"name": "{{ c.function.name }}", '
    '"arguments": {{ c.function.arguments }}}\n</tool_call>{% endfor %}<|im_end|>\n'
    "{% elif m.role == 'tool' %}<|im_start|>tool\n<tool_response>\n{{ m.content }}\n"
    "</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# DeepSeek V3 / R1: full-width special tokens, function<sep>NAME then fenced JSON arguments
# printed as given, tool outputs in their own blocks.
DEEPSEEK = (
    "<｜begin▁of▁sentence｜>"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}"
    "{% if tools %}\n\n## Tools\n{% for t in tools %}{{ t.function | tojson }}\n{% endfor %}"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}<｜User｜>{{ m.content }}"
    "{% elif m.role == 'assistant' and m.tool_calls %}<｜Assistant｜>{{ m.content }}"
    "<｜tool▁calls▁begin｜>{% for c in m.tool_calls %}<｜tool▁call▁begin｜>"
    "{{ c.type }}<｜tool▁sep｜>{{ c.function.name }}\n```json\n{{ c.function.arguments }}\n```"
    "<｜tool▁call▁end｜>{% endfor %}<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
    "{% elif m.role == 'assistant' %}<｜Assistant｜>{{ m.content }}<｜end▁of▁sentence｜>"
    "{% elif m.role == 'tool' %}<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{{ m.content }}"
    "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
)

# Qwen3-Coder: XML calls <function=NAME><parameter=KEY>VALUE</parameter> built by iterating
# the arguments (a dict is required), tool results in a user turn.
QWEN3_CODER = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n<tools>{% for t in tools %}\n<function>\n<name>{{ t.function.name }}</name>"
    "{% for p in t.function.parameters.properties %}\n<parameter>{{ p }}</parameter>{% endfor %}"
    "\n</function>{% endfor %}\n</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{% if not tools %}<|im_start|>system\n{{ m.content }}"
    "<|im_end|>\n{% endif %}"
    "{% elif m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n{{ m.content }}"
    "{% for c in m.tool_calls %}\n<tool_call>\n<function={{ c.function.name }}>\n"
    "{% for k, v in c.function.arguments.items() %}<parameter={{ k }}>\n"
    "{{ v if v is string else v | tojson }}\n</parameter>\n{% endfor %}</function>\n</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n"
    "</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# GLM-4 style roles: no end-of-turn token (a turn ends where the next role token starts),
# <|observation|> for tool results, XML <function=..><parameter=..> calls.
GLM_XML = (
    "[gMASK]<sop>"
    "{% if tools %}<|system|>\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|assistant|>\n{{ m.content }}"
    "{% for c in m.tool_calls %}<function={{ c.function.name }}>"
    "{% for k, v in c.function.arguments.items() %}<parameter={{ k }}>"
    "{{ v if v is string else v | tojson }}</parameter>{% endfor %}</function>{% endfor %}"
    "{% elif m.role == 'tool' %}<|observation|>\n{{ m.content }}"
    "{% else %}<|{{ m.role }}|>\n{{ m.content }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Llama 3.2 / Llama 4 "pythonic" tool calls: <|python_tag|>[fn(key="v", n=2)]<|eom_id|>.
LLAMA32_PYTHONIC = (
    "<|begin_of_text|>"
    "{% if tools %}<|start_header_id|>system<|end_header_id|>\n\nYou can call these functions "
    "as [func_name(param=value)]:\n{% for t in tools %}{{ t.function | tojson }}\n{% endfor %}"
    "<|eot_id|>{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>["
    "{% for c in m.tool_calls %}{{ c.function.name }}("
    "{% for k, v in c.function.arguments.items() %}{{ k }}={{ v | tojson }}"
    "{% if not loop.last %}, {% endif %}{% endfor %})"
    "{% if not loop.last %}, {% endif %}{% endfor %}]<|eom_id|>"
    "{% elif m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ m.content }}"
    "<|eot_id|>"
    "{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

_CHATML_CALL = (
    '{% for c in m.tool_calls %}<tool_call>{"name": "{{ c.function.name }}", '
    '"arguments": {{ c.function.arguments | tojson }}}</tool_call>{% endfor %}'
)

# Qwen3 style: reasoning (<think>...</think> in content) is kept only for assistant turns after
# the last user message, dropped from earlier history.
DROPS_REASONING = (
    "{% set ns = namespace(last_user=0) %}"
    "{% for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}"
    "{% endif %}{% endfor %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' %}"
    "{% set content = m.content %}{% set reasoning = '' %}"
    "{% if '</think>' in content %}"
    "{% set reasoning = content.split('</think>')[0].split('<think>')[-1].strip() %}"
    "{% set content = content.split('</think>')[-1].lstrip() %}{% endif %}"
    "{% if loop.index0 > ns.last_user and reasoning %}<think>\n{{ reasoning }}\n</think>\n\n"
    "{% endif %}{{ content }}" + _CHATML_CALL + "{% else %}{{ m.content }}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Appends the assistant header after the last message whatever add_generation_prompt says.
HEADER_REGARDLESS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.role == 'assistant' and m.tool_calls %}" + _CHATML_CALL + "{% endif %}"
    "<|im_end|>\n{% endfor %}<|im_start|>assistant{{ '\\n' }}"
)

# Closes the *last* tool result with other whitespace than earlier ones.
LAST_TOOL_CLOSED_DIFFERENTLY = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.role == 'assistant' and m.tool_calls %}" + _CHATML_CALL + "{% endif %}"
    "{% if m.role == 'tool' and loop.last %}<|im_end|>\n\n{% else %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Inserts the system prompt and tool list only when the last message is a user turn.
TOOLS_ONLY_AFTER_USER = (
    "{% if messages[-1].role == 'user' %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "{% if tools %}Tools: {% for t in tools %}{{ t.function.name }} {% endfor %}{% endif %}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n"
    "{{ m.content }}{% if m.role == 'assistant' and m.tool_calls %}" + _CHATML_CALL + "{% endif %}"
    "<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Validates ids: at least 9 alphanumerics (raise_exception otherwise) and prints them.
VALIDATES_IDS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}"
    "{% if c.id | length < 9 or not c.id.isalnum() %}"
    "{{ raise_exception('tool call ids must be >= 9 alphanumeric characters') }}{% endif %}"
    '<tool_call>{"id": "{{ c.id }}", "name": "{{ c.function.name }}", "arguments": '
    "{{ c.function.arguments | tojson }}}</tool_call>{% endfor %}"
    "{% if m.role == 'tool' %} (answers {{ m.tool_call_id }}){% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Marks assistant output with {% generation %} blocks (return_assistant_tokens_mask).
GENERATION_BLOCKS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
    "{% if m.tool_calls %}" + _CHATML_CALL + "{% endif %}<|im_end|>{% endgeneration %}\n"
    "{% else %}{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# DeepSeek-V3-style whitespace noise: block tags leave indentation inside the turn (the
# generation prompt ends with a newline, the rendered turn starts with spaces) and the last
# message is closed with other whitespace than earlier ones.
WHITESPACE_NOISE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}"
    "{% if m.role == 'assistant' %}    {% else %}{{ '\\n' }}{% endif %}{{ m.content }}"
    "{% if m.role == 'assistant' and m.tool_calls %}" + _CHATML_CALL + "{% endif %}"
    "<|im_end|>{% if loop.last %}{{ '\\n' }}{% else %}  {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)

TEMPLATES: dict[str, str] = {
    "qwen2.5": QWEN25,
    "llama3-json": LLAMA3_JSON,
    "mistral": MISTRAL,
    "hermes-as-given": HERMES,
    "deepseek": DEEPSEEK,
    "qwen3-coder-xml": QWEN3_CODER,
    "glm-xml": GLM_XML,
    "llama3.2-pythonic": LLAMA32_PYTHONIC,
    "drops-reasoning": DROPS_REASONING,
    "header-regardless": HEADER_REGARDLESS,
    "last-tool-closed-differently": LAST_TOOL_CLOSED_DIFFERENTLY,
    "tools-only-after-user": TOOLS_ONLY_AFTER_USER,
    "validates-ids": VALIDATES_IDS,
    "generation-blocks": GENERATION_BLOCKS,
    "whitespace-noise": WHITESPACE_NOISE,
}

#: The tool-call format each template's probe render must be detected as.
FORMATS: dict[str, str] = {
    "qwen2.5": "json", "llama3-json": "json", "mistral": "json", "hermes-as-given": "json",
    "deepseek": "deepseek", "qwen3-coder-xml": "xml", "glm-xml": "xml",
    "llama3.2-pythonic": "pythonic", "drops-reasoning": "json", "header-regardless": "json",
    "last-tool-closed-differently": "json", "tools-only-after-user": "json",
    "validates-ids": "json", "generation-blocks": "json", "whitespace-noise": "json",
}  # fmt: skip

#: Fixtures that print the tool list into the prompt (the others ignore ``tools``).
PRINT_TOOLS: frozenset[str] = frozenset(
    {"qwen2.5", "llama3-json", "mistral", "hermes-as-given", "deepseek", "qwen3-coder-xml",
     "glm-xml", "llama3.2-pythonic", "tools-only-after-user"}
)  # fmt: skip
