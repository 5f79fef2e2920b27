using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Gill.ML.Generation;
using Gill.ML.Inference;
using Microsoft.Extensions.AI;

namespace Gill.ML.Chat;

/// <summary>
/// An <see cref="IChatClient"/> over a <see cref="GillModel"/>. Messages are turned into GILL's dialogue format:
/// each user message becomes its images (as visual tokens) followed by <c>"Q: {text}\nA:"</c>, each assistant message its
/// images followed by <c>"{text}\n"</c>, system messages their text. The reply carries text and images as
/// <see cref="DataContent"/> (PNG for generated images; the file's bytes for retrieved ones, with the gallery id and
/// score in <see cref="AIContent.AdditionalProperties"/>). Images of earlier messages that are gallery images are never
/// retrieved again. <see cref="ChatOptions"/> Temperature, TopP, MaxOutputTokens and Seed map onto
/// <see cref="GillGenerationOptions"/>.
/// </summary>
public sealed class GillChatClient : IChatClient
{
    private readonly GillModel _model;
    private readonly GillGenerationOptions _defaults;
    private readonly string? _galleryRoot;

    /// <summary>Creates a client.</summary>
    /// <param name="model">The model (not owned).</param>
    /// <param name="defaults">Generation options used when <see cref="ChatOptions"/> does not override them (default: the demo's 32 tokens and scale 1.3, stop at newline, left truncation of long conversations).</param>
    /// <param name="galleryRoot">Folder that gallery ids are relative to (to return retrieved images' bytes); null returns only their ids.</param>
    public GillChatClient(GillModel model, GillGenerationOptions? defaults = null, string? galleryRoot = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _defaults = defaults ?? new GillGenerationOptions { MaxNewTokens = 32, ImageTokenScaleFactor = 1.3, StopAtNewline = true, ContextOverflow = GillContextOverflow.TruncateLeft };
        _galleryRoot = galleryRoot;
    }

    /// <summary>Metadata key of a retrieved image's gallery id.</summary>
    public const string GalleryIdKey = "gill.gallery_id";

    /// <summary>Metadata key of a retrieved image's score.</summary>
    public const string ScoreKey = "gill.score";

    /// <summary>Metadata key of an image's decision ("retrieve"/"generate").</summary>
    public const string DecisionKey = "gill.decision";

    /// <summary>Builds the GILL prompt of a conversation.</summary>
    public static GillPrompt ToPrompt(IEnumerable<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var parts = new List<GillPromptPart>();
        foreach (var m in messages)
        {
            var texts = new List<string>();
            foreach (var c in m.Contents)
            {
                switch (c)
                {
                    case TextContent t when t.AdditionalProperties?.ContainsKey(GalleryIdKey) == true:
                        break; // a retrieved image shown by reference: excluded from retrieval, not part of the text
                    case TextContent t:
                        texts.Add(t.Text);
                        break;
                    case DataContent d when d.HasTopLevelMediaType("image"):
                    {
                        string? galleryId = d.AdditionalProperties?.TryGetValue(GalleryIdKey, out var g) == true ? g?.ToString() : null;
                        parts.Add(GillImageInput.FromEncodedBytes(d.Data) with { GalleryId = galleryId });
                        break;
                    }
                    case DataContent d:
                        throw new ArgumentException($"Unsupported data content of media type '{d.MediaType}': only images are understood.");
                }
            }
            var text = string.Join(" ", texts).Trim();
            if (m.Role == ChatRole.User) parts.Add(new GillTextInput($"Q: {text}\nA:"));
            else if (m.Role == ChatRole.Assistant) { if (text.Length > 0) parts.Add(new GillTextInput($" {text}\n")); }
            else if (text.Length > 0) parts.Add(new GillTextInput(text + "\n"));
        }
        if (parts.Count == 0) throw new ArgumentException("The conversation has no content.", nameof(messages));
        return new GillPrompt(parts);
    }

    /// <summary>Gallery ids carried by any content of the conversation (images shown earlier).</summary>
    public static IReadOnlyList<string> ShownGalleryIds(IEnumerable<ChatMessage> messages) =>
        messages.SelectMany(m => m.Contents)
            .Select(c => c.AdditionalProperties?.TryGetValue(GalleryIdKey, out var g) == true ? g?.ToString() : null)
            .Where(id => id is not null).Select(id => id!).Distinct().ToList();

    private GillGenerationOptions Options(ChatOptions? options, IEnumerable<ChatMessage> messages)
    {
        var o = new GillGenerationOptions
        {
            MaxNewTokens = options?.MaxOutputTokens ?? _defaults.MaxNewTokens,
            Temperature = options?.Temperature ?? _defaults.Temperature,
            TopP = options?.TopP ?? _defaults.TopP,
            Seed = options?.Seed ?? _defaults.Seed,
            MinTokensBeforeImage = _defaults.MinTokensBeforeImage,
            ImageTokenScaleFactor = _defaults.ImageTokenScaleFactor,
            MaxImages = _defaults.MaxImages,
            AlwaysAddBos = _defaults.AlwaysAddBos,
            StopAtEos = _defaults.StopAtEos,
            StopAtNewline = _defaults.StopAtNewline,
            TextTruncation = _defaults.TextTruncation,
            UseCache = _defaults.UseCache,
            ContextOverflow = _defaults.ContextOverflow,
            DecisionMode = _defaults.DecisionMode,
            RetrievalScoreThreshold = _defaults.RetrievalScoreThreshold,
            RetrievalTopK = _defaults.RetrievalTopK,
            ExcludeGalleryIds = (_defaults.ExcludeGalleryIds ?? Array.Empty<string>()).Concat(ShownGalleryIds(messages)).Distinct().ToList(),
            ImageGeneration = _defaults.ImageGeneration,
            ContextExamples = _defaults.ContextExamples,
            ContextDedupThreshold = _defaults.ContextDedupThreshold,
        };
        if (o.Temperature == 0) o.TopP = 1;
        return o;
    }

    /// <summary>The reply contents of a result: text, then images in output order.</summary>
    public IList<AIContent> ToContents(GillGenerationResult result)
    {
        var contents = new List<AIContent>();
        foreach (var part in result.Parts)
        {
            switch (part)
            {
                case GillTextOutput t:
                    contents.Add(new TextContent(t.Text.Trim()));
                    break;
                case GillGeneratedImageOutput g:
                    contents.Add(new DataContent(g.ToPng(), "image/png")
                    {
                        AdditionalProperties = new AdditionalPropertiesDictionary { [DecisionKey] = "generate" },
                    });
                    break;
                case GillRetrievedImageOutput r when r.Rank == 0:
                {
                    var props = new AdditionalPropertiesDictionary { [DecisionKey] = "retrieve", [GalleryIdKey] = r.Id, [ScoreKey] = r.Score };
                    string? file = _galleryRoot is null ? null : Path.IsPathRooted(r.Id) ? r.Id : Path.Combine(_galleryRoot, r.Id);
                    if (file is not null && File.Exists(file))
                        contents.Add(new DataContent(File.ReadAllBytes(file), MediaType(file)) { AdditionalProperties = props, Name = r.Id });
                    else
                        contents.Add(new TextContent($"[image {r.Id}]") { AdditionalProperties = props });
                    break;
                }
            }
        }
        return contents;
    }

    private static string MediaType(string file) => Path.GetExtension(file).ToLowerInvariant() switch
    {
        ".jpg" or ".jpeg" => "image/jpeg",
        ".gif" => "image/gif",
        ".bmp" => "image/bmp",
        ".webp" => "image/webp",
        _ => "image/png",
    };

    /// <inheritdoc />
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var list = messages?.ToList() ?? throw new ArgumentNullException(nameof(messages));
        var prompt = ToPrompt(list);
        var o = Options(options, list);
        return Task.Run(() =>
        {
            using var result = _model.Generate(prompt, o, cancellationToken);
            var message = new ChatMessage(ChatRole.Assistant, ToContents(result));
            return new ChatResponse(message)
            {
                ModelId = "gill",
                FinishReason = ChatFinishReason.Stop,
                Usage = new UsageDetails { InputTokenCount = result.PromptLength, OutputTokenCount = result.TokenIds.Count },
            };
        }, cancellationToken);
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var list = messages?.ToList() ?? throw new ArgumentNullException(nameof(messages));
        var prompt = ToPrompt(list);
        var o = Options(options, list);
        var channel = Channel.CreateUnbounded<ChatResponseUpdate>();
        var img0 = _model.Core.ImgTokenIds[0];
        var pending = new List<int>();
        string emitted = "";
        bool inImage = false;
        o.TokenCallback = (_, token) =>
        {
            if (token == img0) { inImage = true; return; }
            if (inImage) { inImage = false; pending.Clear(); emitted = ""; }
            pending.Add(token);
            var text = _model.Tokenizer.Decode(pending, skipSpecialTokens: true);
            if (text.Length > emitted.Length && !text.EndsWith('\uFFFD'))
            {
                channel.Writer.TryWrite(new ChatResponseUpdate(ChatRole.Assistant, text[emitted.Length..]));
                emitted = text;
            }
        };
        var work = Task.Run(() =>
        {
            try
            {
                using var result = _model.Generate(prompt, o, cancellationToken);
                var images = ToContents(result).Where(c => c is not TextContent).ToList();
                if (images.Count > 0) channel.Writer.TryWrite(new ChatResponseUpdate(ChatRole.Assistant, images));
                channel.Writer.TryWrite(new ChatResponseUpdate { Role = ChatRole.Assistant, FinishReason = ChatFinishReason.Stop });
                channel.Writer.Complete();
            }
            catch (Exception e)
            {
                channel.Writer.Complete(e);
            }
        }, cancellationToken);
        await foreach (var update in channel.Reader.ReadAllAsync(cancellationToken)) yield return update;
        await work.ConfigureAwait(false);
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return new ChatClientMetadata("gill", null, "gill");
        if (serviceType.IsInstanceOfType(_model)) return _model;
        if (serviceType.IsInstanceOfType(this)) return this;
        return null;
    }

    /// <inheritdoc />
    public void Dispose() { }
}
