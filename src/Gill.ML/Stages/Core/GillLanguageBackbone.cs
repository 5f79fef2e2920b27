using Gill.ML.Modules;
using Gill.ML.Persistence;
using Gill.ML.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages;

/// <summary>
/// The frozen language model of GILL and its tokenizer extended with the [IMG] tokens: loaded from a Hugging Face
/// model folder and a tokenizer folder, both recorded (path + SHA-256) in saved models. The tokenizer extension is
/// explicit (<c>&lt;|image|&gt;</c> then <c>[IMG0]</c>…<c>[IMG{r-1}]</c>, GILL's order) and persisted as tokenizer additions.
/// </summary>
/// <remarks>
/// Stages that receive a backbone from the caller never dispose it; stages loaded from a file own theirs.
/// </remarks>
public sealed class GillLanguageBackbone : IDisposable
{
    private bool _disposed;

    private GillLanguageBackbone(ICausalLM model, GillTokenizer tokenizer, GillTokenIds ids, string modelFolder, string tokenizerFolder, ScalarType dtype)
    {
        LanguageModel = model;
        Tokenizer = tokenizer;
        ImageTokenId = ids.ImageTokenId;
        ImgTokenIds = ids.ImgTokenIds.ToArray();
        LanguageModelFolder = modelFolder;
        TokenizerFolder = tokenizerFolder;
        DType = dtype;
        BosTokenId = tokenizer.BosTokenId;
        PadTokenId = tokenizer.PadTokenId ?? model.Info.PadTokenId
            ?? throw new InvalidDataException($"Neither the tokenizer in '{tokenizerFolder}' nor the language model in '{modelFolder}' defines a pad token.");
        EosTokenId = tokenizer.EosTokenId;
        int vocab = (int)model.InputEmbeddingWeight.shape[0];
        foreach (var (name, id) in new[] { ("BOS", BosTokenId), ("pad", PadTokenId), ("EOS", EosTokenId) })
            if (id < 0 || id >= vocab)
                throw new InvalidDataException($"The tokenizer's {name} id {id} is outside the language model's vocabulary of {vocab} rows ('{modelFolder}').");
    }

    /// <summary>
    /// Loads the language model (frozen, evaluation mode) and the tokenizer, then adds GILL's tokens to the tokenizer.
    /// </summary>
    /// <param name="languageModelFolder">Hugging Face folder of an OPT or GPT-2 model (config.json + safetensors).</param>
    /// <param name="tokenizerFolder">Folder with vocab.json + merges.txt; null uses <paramref name="languageModelFolder"/>.</param>
    /// <param name="imgTokenCount">r: number of [IMG] tokens to add (GILL: 8).</param>
    /// <param name="options">Device and element type of the language model.</param>
    public static GillLanguageBackbone Load(string languageModelFolder, string? tokenizerFolder = null, int imgTokenCount = 8, CausalLMLoadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(languageModelFolder);
        if (imgTokenCount <= 0) throw new ArgumentOutOfRangeException(nameof(imgTokenCount), imgTokenCount, "The number of [IMG] tokens must be positive.");
        var modelFolder = Path.GetFullPath(languageModelFolder);
        var tokFolder = Path.GetFullPath(tokenizerFolder ?? languageModelFolder);
        var tokenizer = GillTokenizer.FromFolder(tokFolder);
        var ids = tokenizer.AddGillTokens(imgTokenCount);
        options ??= new CausalLMLoadOptions();
        var model = CausalLM.Load(modelFolder, options);
        try
        {
            return new GillLanguageBackbone(model, tokenizer, ids, modelFolder, tokFolder, options.DType);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    internal ICausalLM LanguageModel { get; }

    /// <summary>The tokenizer with the [IMG] tokens added.</summary>
    public GillTokenizer Tokenizer { get; }

    /// <summary>Folder the language model was loaded from.</summary>
    public string LanguageModelFolder { get; }

    /// <summary>Folder the tokenizer was loaded from.</summary>
    public string TokenizerFolder { get; }

    /// <summary>Id of <c>&lt;|image|&gt;</c> (never fed to the model).</summary>
    public int ImageTokenId { get; }

    /// <summary>Ids of [IMG0]…[IMG{r-1}].</summary>
    public IReadOnlyList<int> ImgTokenIds { get; }

    /// <summary>BOS id.</summary>
    public int BosTokenId { get; }

    /// <summary>Pad id.</summary>
    public int PadTokenId { get; }

    /// <summary>EOS id.</summary>
    public int EosTokenId { get; }

    /// <summary>D: the language model's input embedding width.</summary>
    public int EmbeddingSize => LanguageModel.Info.InputEmbeddingSize;

    /// <summary>Element type of the language model.</summary>
    public ScalarType DType { get; }

    /// <summary>Device of the language model.</summary>
    public Device Device => LanguageModel.Device;

    /// <summary>
    /// A copy of <paramref name="architecture"/> whose [IMG] ids, BOS and pad ids are this backbone's (everything else kept).
    /// </summary>
    public GillConfig Configure(GillConfig architecture)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        // A copy that is not validated yet: the architecture's own [IMG] ids may not match its num_tokens until replaced here.
        var c = System.Text.Json.JsonSerializer.Deserialize<GillConfig>(architecture.ToJson())
            ?? throw new ArgumentException("The GILL architecture could not be copied.", nameof(architecture));
        if (c.NumTokens != ImgTokenIds.Count)
            throw new ArgumentException($"The GILL architecture has num_tokens = {c.NumTokens}, but the backbone's tokenizer has {ImgTokenIds.Count} [IMG] tokens.", nameof(architecture));
        c.RetrievalTokenIdx = ImgTokenIds.ToArray();
        c.GenTokenIdx = ImgTokenIds.ToArray();
        c.BosTokenId = BosTokenId;
        c.PadTokenId = PadTokenId;
        c.Validate();
        return c;
    }

    /// <summary>
    /// Tokenizes one caption (no BOS) and checks it: not empty, and BOS + caption + r [IMG] tokens fit in
    /// <paramref name="maxLength"/>. Errors name the stage, column and row.
    /// </summary>
    internal int[] EncodeCaption(string? caption, int maxLength, string stage, string column, long row)
    {
        if (string.IsNullOrWhiteSpace(caption))
            throw new InvalidDataException($"{stage}: column '{column}', row {row}: the caption is empty.");
        var ids = Tokenizer.Encode(caption, addBos: false);
        int needed = 1 + ids.Length + ImgTokenIds.Count;
        if (needed > maxLength)
            throw new InvalidDataException($"{stage}: column '{column}', row {row}: the caption has {ids.Length} tokens; with BOS and {ImgTokenIds.Count} [IMG] tokens " +
                $"that is {needed}, more than the maximum sequence length {maxLength} (MaxSequenceLength). Shorten the caption or raise the maximum.");
        int vocab = (int)LanguageModel.InputEmbeddingWeight.shape[0];
        foreach (var id in ids)
            if (id >= vocab && !ImgTokenIds.Contains(id))
                throw new InvalidDataException($"{stage}: column '{column}', row {row}: token id {id} is outside the language model's vocabulary ({vocab}).");
        return ids;
    }

    internal void WriteTo(GillModelWriter writer)
    {
        writer.AddBackbone("language-model", LanguageModelFolder);
        if (!string.Equals(TokenizerFolder, LanguageModelFolder, StringComparison.Ordinal)) writer.AddBackbone("tokenizer", TokenizerFolder);
        writer.AddTokenizerAddition(GillTokenizer.ImageToken, ImageTokenId);
        for (int i = 0; i < ImgTokenIds.Count; i++) writer.AddTokenizerAddition($"[IMG{i}]", ImgTokenIds[i]);
    }

    internal static GillLanguageBackbone LoadFrom(GillModelReader reader, ScalarType dtype)
    {
        var modelFolder = reader.ResolveBackbone("language-model");
        var tokFolder = reader.Backbones.Any(b => b.Name == "tokenizer") ? reader.ResolveBackbone("tokenizer") : modelFolder;
        var additions = reader.TokenizerAdditions;
        int r = additions.Count(a => a.Token.StartsWith("[IMG", StringComparison.Ordinal));
        var backbone = Load(modelFolder, tokFolder, r, new CausalLMLoadOptions { DType = dtype, Device = ResolveDevice(reader.Context) });
        var expected = additions.ToDictionary(a => a.Token, a => a.Id);
        var actual = new Dictionary<string, int> { [GillTokenizer.ImageToken] = backbone.ImageTokenId };
        for (int i = 0; i < backbone.ImgTokenIds.Count; i++) actual[$"[IMG{i}]"] = backbone.ImgTokenIds[i];
        foreach (var (token, id) in expected)
            if (!actual.TryGetValue(token, out var got) || got != id)
            {
                backbone.Dispose();
                throw new InvalidDataException($"{reader.StageFolder}: the saved model gave '{token}' id {id}, the tokenizer in '{tokFolder}' now gives " +
                    $"{(actual.TryGetValue(token, out var g) ? g.ToString() : "none")}.");
            }
        return backbone;
    }

    /// <summary>The device of the context: CUDA device <c>GpuDeviceId</c> when set and available (else CPU when FallbackToCpu).</summary>
    internal static Device ResolveDevice(Microsoft.ML.MLContext context)
    {
        if (context.GpuDeviceId is int id)
        {
            if (torch.cuda.is_available()) return torch.device(DeviceType.CUDA, id);
            if (!context.FallbackToCpu)
                throw new InvalidOperationException($"MLContext.GpuDeviceId is {id} but CUDA is not available, and FallbackToCpu is off.");
        }
        return torch.CPU;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        LanguageModel.Dispose();
    }
}
