using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Gill.ML.Tokenization;

/// <summary>Options of <see cref="ClipTokenizer"/>.</summary>
public sealed record ClipTokenizerOptions
{
    /// <summary>Maximum sequence length including BOS and EOS; null takes tokenizer_config.json "model_max_length",
    /// else 77.</summary>
    public int? ModelMaxLength { get; init; }

    /// <summary>Pad token that overrides the folder's; null takes special_tokens_map.json / tokenizer_config.json,
    /// else "&lt;|endoftext|&gt;" (what Stable Diffusion v1 pads with).</summary>
    public string? PadToken { get; init; }
}

/// <summary>
/// The CLIP text tokenizer, encoding like Hugging Face's <c>CLIPTokenizer</c>: whitespace is collapsed and text
/// lower-cased, CLIP's pre-tokenization regex splits words, and byte-level BPE with the "&lt;/w&gt;" end-of-word suffix
/// (Microsoft.ML.Tokenizers <see cref="BpeTokenizer"/>) maps them to ids between "&lt;|startoftext|&gt;" and
/// "&lt;|endoftext|&gt;". Batches are padded (Stable Diffusion pads with "&lt;|endoftext|&gt;") or truncated on the
/// right, keeping EOS, to the model maximum of 77 tokens.
/// </summary>
/// <remarks>Like Hugging Face, only the first <see cref="MaxMerges"/> lines of merges.txt are used. Hugging Face cleans
/// text with ftfy when it is installed (else with a BERT-style basic tokenizer); this class follows the ftfy path without
/// ftfy's repair of mis-decoded text (mojibake), which clean captions do not need.</remarks>
public sealed class ClipTokenizer
{
    /// <summary>CLIP's BOS token.</summary>
    public const string StartOfText = "<|startoftext|>";

    /// <summary>CLIP's EOS token.</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>CLIP's end-of-word suffix of BPE tokens.</summary>
    public const string EndOfWordSuffix = "</w>";

    /// <summary>Default maximum length of CLIP text models.</summary>
    public const int DefaultModelMaxLength = 77;

    /// <summary>Hugging Face's CLIPTokenizer reads at most this many merges (49152 - 256 - 2) from merges.txt.</summary>
    public const int MaxMerges = 49152 - 256 - 2;

    internal const string Pattern = @"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

    internal static readonly Regex PreTokenizerRegex = new(Pattern, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.Compiled);
    private static readonly Regex s_whitespace = new(@"\s+", RegexOptions.Compiled);

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<int, string> _idToToken;

    private ClipTokenizer(BpeTokenizer bpe, Dictionary<string, int> vocab, string source, int modelMaxLength, string padToken)
    {
        _bpe = bpe;
        _idToToken = vocab.ToDictionary(kv => kv.Value, kv => kv.Key);
        Source = source;
        VocabularySize = vocab.Count;
        if (modelMaxLength < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(modelMaxLength), $"The model maximum length of {source} must hold BOS and EOS, got {modelMaxLength}.");
        }
        ModelMaxLength = modelMaxLength;
        BosTokenId = IdOf(vocab, StartOfText, source);
        EosTokenId = IdOf(vocab, EndOfText, source);
        PadToken = padToken;
        PadTokenId = IdOf(vocab, padToken, source);
    }

    private static int IdOf(Dictionary<string, int> vocab, string token, string source)
        => vocab.TryGetValue(token, out int id) ? id : throw new InvalidDataException($"CLIP vocabulary '{source}' has no token '{token}'.");

    /// <summary>Where the vocabulary came from.</summary>
    public string Source { get; }

    /// <summary>Number of vocabulary entries (49408 for OpenAI CLIP).</summary>
    public int VocabularySize { get; }

    /// <summary>Maximum sequence length including BOS and EOS (77 for CLIP).</summary>
    public int ModelMaxLength { get; }

    /// <summary>Id of "&lt;|startoftext|&gt;".</summary>
    public int BosTokenId { get; }

    /// <summary>Id of "&lt;|endoftext|&gt;".</summary>
    public int EosTokenId { get; }

    /// <summary>The pad token.</summary>
    public string PadToken { get; }

    /// <summary>Id of <see cref="PadToken"/>.</summary>
    public int PadTokenId { get; }

    /// <summary>
    /// Loads vocab.json and merges.txt of a CLIP checkpoint folder or a Stable Diffusion <c>tokenizer/</c> folder, with
    /// the pad token from special_tokens_map.json / tokenizer_config.json and model_max_length from tokenizer_config.json.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">vocab.json or merges.txt is missing (the message names the path).</exception>
    public static ClipTokenizer FromFolder(string folder, ClipTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"CLIP tokenizer folder '{folder}' does not exist.");
        }
        JsonObject? map = TokenizerFiles.ReadObject(Path.Combine(folder, TokenizerFiles.SpecialTokensMapFileName));
        JsonObject? config = TokenizerFiles.ReadObject(Path.Combine(folder, TokenizerFiles.TokenizerConfigFileName));
        string pad = options?.PadToken ?? TokenizerFiles.TokenContent(map, "pad_token") ?? TokenizerFiles.TokenContent(config, "pad_token") ?? EndOfText;
        long? configured = TokenizerFiles.Int(config, "model_max_length");
        // Hugging Face writes a huge sentinel when no maximum is known.
        int maxLength = options?.ModelMaxLength ?? (configured is long m && m > 0 && m < 1_000_000 ? (int)m : DefaultModelMaxLength);
        return Create(Path.Combine(folder, TokenizerFiles.VocabFileName), Path.Combine(folder, TokenizerFiles.MergesFileName), folder, maxLength, pad);
    }

    /// <summary>Builds a CLIP tokenizer from explicit vocab.json and merges.txt files.</summary>
    public static ClipTokenizer FromFiles(string vocabJsonPath, string mergesTxtPath, ClipTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(vocabJsonPath);
        ArgumentNullException.ThrowIfNull(mergesTxtPath);
        return Create(vocabJsonPath, mergesTxtPath, vocabJsonPath, options?.ModelMaxLength ?? DefaultModelMaxLength, options?.PadToken ?? EndOfText);
    }

    private static ClipTokenizer Create(string vocabPath, string mergesPath, string source, int maxLength, string pad)
    {
        Dictionary<string, int> vocab = TokenizerFiles.ReadVocabulary(vocabPath);
        List<string> merges = TokenizerFiles.ReadMerges(mergesPath);
        if (merges.Count > MaxMerges)
        {
            merges.RemoveRange(MaxMerges, merges.Count - MaxMerges);
        }
        var special = new Dictionary<string, int>(StringComparer.Ordinal)
        {
            [StartOfText] = IdOf(vocab, StartOfText, vocabPath),
            [EndOfText] = IdOf(vocab, EndOfText, vocabPath),
        };
        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                EndOfWordSuffix = EndOfWordSuffix,
                SpecialTokens = special,
                PreTokenizer = new RegexPreTokenizer(PreTokenizerRegex, special),
            });
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"CLIP tokenizer files '{vocabPath}' and '{mergesPath}' do not agree: {e.Message}", e);
        }
        return new ClipTokenizer(bpe, vocab, source, maxLength, pad);
    }

    /// <summary>CLIP's text cleanup as Hugging Face does it with ftfy installed, less ftfy's repair of mis-decoded text:
    /// Unicode NFC, runs of whitespace become one space, the ends are trimmed, and the text is lower-cased.</summary>
    public static string CleanText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return s_whitespace.Replace(text.Normalize(NormalizationForm.FormC), " ").Trim().ToLowerInvariant();
    }

    /// <summary>Encodes one text: [BOS] tokens [EOS] (without truncation or padding).</summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        var ids = new List<int>();
        if (addSpecialTokens)
        {
            ids.Add(BosTokenId);
        }
        ids.AddRange(EncodeContent(text));
        if (addSpecialTokens)
        {
            ids.Add(EosTokenId);
        }
        return ids.ToArray();
    }

    private IReadOnlyList<int> EncodeContent(string text)
    {
        string clean = CleanText(text);
        return clean.Length == 0 ? Array.Empty<int>() : _bpe.EncodeToIds(clean, considerPreTokenization: true, considerNormalization: false);
    }

    /// <summary>
    /// Encodes a batch. By default like Stable Diffusion's text encoder input: padded with the pad token to
    /// <see cref="ModelMaxLength"/> and truncated on the right keeping EOS.
    /// </summary>
    /// <exception cref="InvalidOperationException">A text is longer than the maximum length and truncation is off.</exception>
    public TokenBatch EncodeBatch(IReadOnlyList<string> texts, BatchEncodingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(texts);
        options ??= new BatchEncodingOptions { Padding = PaddingStrategy.MaxLength, MaxLength = ModelMaxLength, Truncation = true };
        if (options.MaxLength is null)
        {
            options = options with { MaxLength = ModelMaxLength };
        }
        var contents = texts.Select(EncodeContent).ToList();
        bool special = options.AddSpecialTokens ?? true;
        return TokenBatch.Build(
            contents,
            special ? new[] { BosTokenId } : Array.Empty<int>(),
            special ? new[] { EosTokenId } : Array.Empty<int>(),
            options,
            PadTokenId,
            $"the CLIP tokenizer of {Source}");
    }

    /// <summary>Decodes ids like Hugging Face's CLIPTokenizer: "&lt;/w&gt;" becomes a space and the result is trimmed.</summary>
    /// <param name="ids">Token ids.</param>
    /// <param name="skipSpecialTokens">Leave out BOS, EOS and pad tokens (Hugging Face's default keeps them).</param>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && (id == BosTokenId || id == EosTokenId || id == PadTokenId))
            {
                continue;
            }
            if (!_idToToken.TryGetValue(id, out string? token))
            {
                throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the CLIP vocabulary of {Source} ({VocabularySize} tokens).");
            }
            if (!ByteLevelAlphabet.TryAppendBytes(token, bytes))
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray()).Replace(EndOfWordSuffix, " ").Trim();
    }

    /// <summary>The token string of an id (byte-level form, e.g. "cat&lt;/w&gt;").</summary>
    public string GetToken(int id)
        => _idToToken.TryGetValue(id, out string? t) ? t : throw new ArgumentOutOfRangeException(nameof(id), $"Token id {id} is outside the CLIP vocabulary of {Source}.");
}
