"""Builders for tiny, randomly initialised checkpoints that load through Prism's real transformers loader.

Each builder trains its tokenizer on a few sentences with the ``tokenizers`` library, wraps it in the model's
own tokenizer class and saves tokenizer, processor and model (safetensors) with ``save_pretrained``, the way a
hub snapshot looks. Nothing is downloaded. A build takes well under a second or two on a laptop CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    ChineseCLIPConfig,
    ChineseCLIPImageProcessorPil,
    ChineseCLIPModel,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessorPil,
)

from webapp.inference.bench import train_wordpiece_vocab
from webapp.inference.settings import InferenceSettings

SENTENCES = [
    "a cat sitting on a mat",
    "a dog running in the park",
    "a red car parked on the street",
    "two people walking on a sunny beach",
    "the food was great and the service excellent",
    "terrible experience, the product broke after a day",
    "it was fine, nothing special",
    "thanks for the quick refund",
]
IMAGE_SIZE = 32
MAX_POSITIONS = 64


def tiny_settings(model_dir: Path, **fields) -> InferenceSettings:
    """InferenceSettings for tests: offline, short captions, one torch thread; ``fields`` override any field."""
    defaults = dict(
        backend="transformers",
        caption_model="unused",
        sentiment_model="unused",
        model_dir=model_dir,
        offline=True,
        caption_num_beams=1,
        caption_max_new_tokens=8,
        neutral_range=(0.35, 0.65),
        torch_threads=1,
        load_wait_seconds=60.0,
        retry_failed_after_seconds=60.0,
    )
    return InferenceSettings(**{**defaults, **fields})


def _wordpiece_vocab(extra_specials: list[str]) -> dict[str, int]:
    return train_wordpiece_vocab(SENTENCES, vocab_size=200, lowercase=True, extra_specials=extra_specials)


def _gpt2_tokenizer() -> GPT2Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    bpe = json.loads(tokenizer.to_str())["model"]
    # Like GPT-2 itself: one <|endoftext|> token for bos/eos/unk and no pad token.
    return GPT2Tokenizer(vocab=bpe["vocab"], merges=[tuple(pair) for pair in bpe["merges"]])


def build_vit_gpt2(directory: Path) -> Path:
    """A ViT encoder + GPT-2 decoder saved like nlpconnect/vit-gpt2-image-captioning.

    As in that checkpoint, the special token ids and a max_length live only in config.json (there is no
    generation_config.json) and nothing defines a pad token, so the loader must fill them in.
    """
    torch.manual_seed(0)
    tokenizer = _gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    encoder = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MAX_POSITIONS,
        n_embd=32,
        n_layer=2,
        n_head=2,
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    model = VisionEncoderDecoderModel(config=config)
    with torch.no_grad():
        # A zero eos embedding (tied to the output layer) gives eos a zero logit against ~300 random ones,
        # so the untrained decoder writes max_new_tokens of text instead of stopping at once.
        model.decoder.get_output_embeddings().weight[eos] = 0.0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    (directory / "generation_config.json").unlink(missing_ok=True)
    config_path = directory / "config.json"
    saved = json.loads(config_path.read_text())
    saved.update(decoder_start_token_id=eos, eos_token_id=eos, max_length=16)
    saved.pop("pad_token_id", None)
    config_path.write_text(json.dumps(saved, indent=2))
    return directory


def build_blip(directory: Path) -> Path:
    """A BLIP captioner with a BERT tokenizer whose bos token is ``[DEC]``, as Salesforce/blip-* ship."""
    torch.manual_seed(0)
    tokenizer = BertTokenizer(vocab=_wordpiece_vocab(["[DEC]"]), bos_token="[DEC]", model_max_length=MAX_POSITIONS)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        encoder_hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        initializer_range=0.02,
    )
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    model = BlipForConditionalGeneration(config)
    model.save_pretrained(directory)
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def build_sentiment(directory: Path, label_names: list[str]) -> Path:
    """A DistilBERT sequence classifier whose classes are ``label_names`` in id order."""
    torch.manual_seed(len(label_names))
    tokenizer = DistilBertTokenizer(vocab=_wordpiece_vocab([]), model_max_length=MAX_POSITIONS)
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
    )
    DistilBertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


EMBEDDING_MAX_SEQ_LENGTH = 32  # below MAX_POSITIONS, so a test can see the loader read it


def build_embedding(directory: Path) -> Path:
    """A BERT encoder laid out like a sentence-transformers checkpoint (as all-MiniLM-L6-v2 is).

    modules.json lists Transformer, mean Pooling and Normalize; sentence_bert_config.json sets
    max_seq_length to ``EMBEDDING_MAX_SEQ_LENGTH``.
    """
    torch.manual_seed(7)
    tokenizer = BertTokenizer(vocab=_wordpiece_vocab([]), model_max_length=MAX_POSITIONS)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "1_Pooling").mkdir()
    pooling = {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    settings = {"max_seq_length": EMBEDDING_MAX_SEQ_LENGTH, "do_lower_case": True}
    (directory / "sentence_bert_config.json").write_text(json.dumps(settings))
    return directory


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_reply_writer(directory: Path) -> Path:
    """A one-layer GPT-2 language model with a BPE tokenizer trained here and a chat template, saved like
    an instruction-tuned checkpoint (the architecture and weights are tiny and random: plumbing only)."""
    tokenizer = _gpt2_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


CLIP_MAX_POSITIONS = 16  # short, so a test can show a long text being cut to its start


def _clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE with CLIP's ``</w>`` word ends and start/end tokens, trained on ``SENTENCES``."""
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    bpe = json.loads(tokenizer.to_str())["model"]
    return CLIPTokenizer(
        vocab=bpe["vocab"], merges=[tuple(pair) for pair in bpe["merges"]], model_max_length=CLIP_MAX_POSITIONS
    )


# Each tower of the tiny joint image-text models (CLIP, Chinese-CLIP): small enough to build in a test.
_TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def build_clip(directory: Path) -> Path:
    """A CLIPModel (text and vision towers of width 32, two layers, 32-pixel images in 8-pixel patches) with
    a CLIP tokenizer and image processor, saved like openai/clip-vit-base-patch32."""
    torch.manual_seed(3)
    tokenizer = _clip_tokenizer()
    text = dict(
        **_TINY_TOWER,
        vocab_size=len(tokenizer),
        max_position_embeddings=CLIP_MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=32,
    )
    vision = dict(**_TINY_TOWER, image_size=IMAGE_SIZE, patch_size=8, projection_dim=32)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(directory)
    return directory


def clip_cosine(directory: Path, image, text: str) -> float:
    """The cosine of ``image`` and ``text`` computed with transformers alone, as its docs show: CLIPModel's
    projected features (``pooler_output`` of get_image_features / get_text_features), L2-normalised."""
    model = CLIPModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32).eval()
    tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
    processor = CLIPImageProcessorPil.from_pretrained(directory, local_files_only=True)
    pixels = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
    tokens = tokenizer([text], truncation=True, max_length=CLIP_MAX_POSITIONS, return_tensors="pt")
    with torch.inference_mode():
        image_features = model.get_image_features(pixel_values=pixels).pooler_output
        text_features = model.get_text_features(**tokens).pooler_output
    image_features = torch.nn.functional.normalize(image_features, dim=-1)
    text_features = torch.nn.functional.normalize(text_features, dim=-1)
    return float((image_features * text_features).sum())


def build_chinese_clip(directory: Path) -> Path:
    """A Chinese-CLIP (BERT text tower with token type ids, CLIP vision tower) with a BERT tokenizer, saved
    like OFA-Sys/chinese-clip-vit-base-patch16: the second family the agreement loader accepts."""
    torch.manual_seed(4)
    tokenizer = BertTokenizer(vocab=_wordpiece_vocab([]), model_max_length=MAX_POSITIONS)
    text = dict(
        **_TINY_TOWER,
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(**_TINY_TOWER, image_size=IMAGE_SIZE, patch_size=8, projection_dim=32)
    model = ChineseCLIPModel(ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    ChineseCLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(directory)
    return directory
