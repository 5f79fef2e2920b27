using System.Diagnostics;
using Gill.ML.Generation;
using Gill.ML.Modules;
using Gill.ML.Retrieval;
using Gill.ML.Serialization;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Tokenization;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Inference;

/// <summary>
/// (caption, image) pairs that retrieval-augmented prompts draw in-context examples from: a retrieval index over the
/// images plus each image's caption and file.
/// </summary>
public sealed class GillContextMemory
{
    /// <summary>Creates a memory over <paramref name="index"/> (not owned).</summary>
    /// <param name="index">Image-side retrieval vectors of the memory's images.</param>
    /// <param name="captions">Caption of each index id.</param>
    /// <param name="imageRoot">Folder that relative ids are resolved against.</param>
    public GillContextMemory(GillRetrievalIndex index, IReadOnlyDictionary<string, string> captions, string imageRoot)
    {
        Index = index ?? throw new ArgumentNullException(nameof(index));
        Captions = captions ?? throw new ArgumentNullException(nameof(captions));
        ImageRoot = imageRoot ?? throw new ArgumentNullException(nameof(imageRoot));
    }

    /// <summary>The index.</summary>
    public GillRetrievalIndex Index { get; }

    /// <summary>Captions by id.</summary>
    public IReadOnlyDictionary<string, string> Captions { get; }

    /// <summary>Root of relative ids.</summary>
    public string ImageRoot { get; }

    internal string Resolve(string id) => System.IO.Path.IsPathRooted(id) ? id : System.IO.Path.Combine(ImageRoot, id);
}

/// <summary>
/// GILL's interleaved multimodal inference: text and images in; text, retrieved images and generated images out. Images
/// become k visual tokens at their positions; when the model emits [IMG0], [IMG1..r−1] are forced; the r [IMG] hidden
/// states give a retrieval embedding (gallery search) and a generation embedding (image generator), and a decision
/// (classifier, threshold or fixed mode) picks between them. Decoding uses a KV cache and supports batches.
/// </summary>
public sealed class GillModel : IDisposable
{
    private readonly bool _owns;
    private HashSet<int>? _newlineIds;
    private Dictionary<string, long>? _galleryIds;

    /// <summary>Assembles a model from its parts.</summary>
    /// <param name="core">LM + trained GILL heads.</param>
    /// <param name="tokenizer">Tokenizer of the LM (its ids must lie below the LM's vocabulary).</param>
    /// <param name="visualEncoder">Encoder giving the visual features the heads were trained on (needed for image prompts and index builds).</param>
    /// <param name="imageGenerator">Image generator conditioned on the mapper output (optional).</param>
    /// <param name="decisionClassifier">Retrieve-or-generate classifier (optional).</param>
    /// <param name="gallery">Retrieval gallery (optional).</param>
    /// <param name="contextMemory">Memory for retrieval-augmented context (optional).</param>
    /// <param name="ownsComponents">Whether <see cref="Dispose"/> disposes the parts.</param>
    public GillModel(GillCoreModel core, GillTokenizer tokenizer, IVisualEncoder? visualEncoder = null, IImageGenerator? imageGenerator = null,
        GillDecisionClassifier? decisionClassifier = null, GillRetrievalIndex? gallery = null, GillContextMemory? contextMemory = null,
        bool ownsComponents = false)
    {
        Core = core ?? throw new ArgumentNullException(nameof(core));
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (visualEncoder is not null && visualEncoder.FeatureSize != core.Config.VisualHiddenSize)
            throw new ArgumentException($"The visual encoder '{visualEncoder.Name}' gives {visualEncoder.FeatureSize}-d features; the GILL heads expect {core.Config.VisualHiddenSize}.", nameof(visualEncoder));
        if (imageGenerator is not null && imageGenerator.ConditioningShape.EmbeddingDim != core.Config.GenEmbDim)
            throw new ArgumentException($"The image generator expects conditioning {imageGenerator.ConditioningShape}; the GILL mapper emits width {core.Config.GenEmbDim}.", nameof(imageGenerator));
        if (imageGenerator is not null && imageGenerator.ConditioningShape.SequenceLength < core.Config.NumClipTokens)
            throw new ArgumentException($"The image generator expects {imageGenerator.ConditioningShape.SequenceLength} conditioning vectors, fewer than the mapper's {core.Config.NumClipTokens}.", nameof(imageGenerator));
        if (decisionClassifier is not null && decisionClassifier.HiddenDim != core.LanguageModel.Info.InputEmbeddingSize)
            throw new ArgumentException($"The decision classifier reads {decisionClassifier.HiddenDim}-d states; the LM's are {core.LanguageModel.Info.InputEmbeddingSize}.", nameof(decisionClassifier));
        if (gallery is not null && gallery.Dimension != core.Config.RetEmbDim)
            throw new ArgumentException($"The gallery holds {gallery.Dimension}-d vectors; the GILL retrieval space is {core.Config.RetEmbDim}-d.", nameof(gallery));
        if (contextMemory is not null && contextMemory.Index.Dimension != core.Config.RetEmbDim)
            throw new ArgumentException($"The context memory holds {contextMemory.Index.Dimension}-d vectors; the GILL retrieval space is {core.Config.RetEmbDim}-d.", nameof(contextMemory));
        for (int i = 0; i < core.ImgTokenIds.Count; i++)
            if (tokenizer.TryGetTokenId($"[IMG{i}]", out int id) && id != core.ImgTokenIds[i])
                throw new ArgumentException($"The tokenizer maps [IMG{i}] to {id}, the GILL config to {core.ImgTokenIds[i]}.", nameof(tokenizer));
        VisualEncoder = visualEncoder;
        ImageGenerator = imageGenerator;
        DecisionClassifier = decisionClassifier;
        Gallery = gallery;
        ContextMemory = contextMemory;
        _owns = ownsComponents;
    }

    /// <summary>LM and GILL heads.</summary>
    public GillCoreModel Core { get; }

    /// <summary>The tokenizer.</summary>
    public GillTokenizer Tokenizer { get; }

    /// <summary>The visual encoder, if any.</summary>
    public IVisualEncoder? VisualEncoder { get; }

    /// <summary>The image generator, if any.</summary>
    public IImageGenerator? ImageGenerator { get; }

    /// <summary>The decision classifier, if any.</summary>
    public GillDecisionClassifier? DecisionClassifier { get; }

    /// <summary>The retrieval gallery, if any.</summary>
    public GillRetrievalIndex? Gallery { get; }

    /// <summary>The retrieval-augmented context memory, if any.</summary>
    public GillContextMemory? ContextMemory { get; }

    /// <summary>The LM's context length (max positions).</summary>
    public int ContextLength => Core.LanguageModel.Info.MaxPositions;

    /// <summary>Loads a GILL model folder (see <see cref="GillModelFolder"/>).</summary>
    public static GillModel Load(string folder, GillModelLoadOptions? options = null) => GillModelFolder.Load(folder, options);

    /// <summary>Generates the answer to one interleaved prompt.</summary>
    public GillGenerationResult Generate(GillPrompt prompt, GillGenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        GenerateBatch(new[] { prompt ?? throw new ArgumentNullException(nameof(prompt)) }, options, cancellationToken)[0];

    /// <summary>
    /// Generates answers to several prompts in one left-padded batch; [IMG] tokens are forced per row, so each row's
    /// output equals what <see cref="Generate"/> gives for it alone.
    /// </summary>
    public IReadOnlyList<GillGenerationResult> GenerateBatch(IReadOnlyList<GillPrompt> prompts, GillGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ArgumentException("No prompts.", nameof(prompts));
        options ??= new GillGenerationOptions();
        options.Validate();
        var total = Stopwatch.StartNew();
        var visualTime = new Stopwatch();
        var lmTime = new Stopwatch();
        var retrievalTime = new Stopwatch();

        using var noGrad = torch.no_grad();
        using var batchScope = torch.NewDisposeScope();
        var encoded = new List<EncodedPrompt>();
        try
        {
            for (int i = 0; i < prompts.Count; i++)
            {
                var prompt = prompts[i] ?? throw new ArgumentException($"Prompt {i} is null.", nameof(prompts));
                var context = options.ContextExamples > 0 ? RetrieveContext(prompt, options, visualTime, lmTime, retrievalTime) : new List<GillPromptPart>();
                encoded.Add(EncodePrompt(context.Concat(prompt.Parts).ToList(), options, visualTime, lmTime, i));
            }
            lmTime.Start();
            var decoded = Decode(encoded, options, cancellationToken);
            lmTime.Stop();
            var results = new List<GillGenerationResult>();
            for (int b = 0; b < prompts.Count; b++)
            {
                results.Add(PostProcess(prompts[b], decoded[b], encoded[b].Length, options, visualTime.Elapsed, lmTime.Elapsed, total, cancellationToken));
            }
            return results;
        }
        finally
        {
            foreach (var e in encoded) e.Embeddings.Dispose();
        }
    }

    // ---------------------------------------------------------------- prompt encoding

    private sealed record EncodedPrompt(Tensor Embeddings, int Length, IReadOnlyList<string> ShownGalleryIds);

    private EncodedPrompt EncodePrompt(IReadOnlyList<GillPromptPart> parts, GillGenerationOptions options, Stopwatch visualTime, Stopwatch lmTime, int row)
    {
        if (parts.Count == 0 || parts.All(p => p is GillTextInput t && string.IsNullOrEmpty(t.Text)))
            throw new ArgumentException($"Prompt {row} is empty: give at least one non-empty text or image part.");
        using var scope = torch.NewDisposeScope();
        var pieces = new List<Tensor>();
        var shown = new List<string>();
        bool addBos = true;
        foreach (var part in parts)
        {
            switch (part)
            {
                case GillTextInput text:
                {
                    var ids = Tokenizer.Encode(text.Text ?? "", addBos);
                    if (!options.AlwaysAddBos) addBos = false;
                    if (ids.Length == 0) continue;
                    lmTime.Start();
                    var idsTensor = torch.tensor(ids.Select(i => (long)i).ToArray(), new long[] { 1, ids.Length });
                    pieces.Add(Core.EmbedTokens(idsTensor)[0]);
                    lmTime.Stop();
                    break;
                }
                case GillImageInput image:
                {
                    var feats = EncodeImages(new[] { image }, visualTime);
                    lmTime.Start();
                    pieces.Add(Core.VisualTokens(feats)[0].to(Core.LanguageModel.DType));
                    lmTime.Stop();
                    var id = image.GalleryId ?? image.Path;
                    if (id is not null) shown.Add(id);
                    break;
                }
                default:
                    throw new ArgumentException($"Unsupported prompt part {part.GetType().Name}.");
            }
        }
        if (pieces.Count == 0) throw new ArgumentException($"Prompt {row} is empty: its text parts encode to no tokens.");
        var embeds = torch.cat(pieces, 0);
        long t = embeds.shape[0];
        int max = ContextLength;
        if (t + 1 > max)
        {
            if (options.ContextOverflow == GillContextOverflow.Error)
                throw new ArgumentException($"Prompt {row} occupies {t} positions (text tokens + visual tokens) but the language model's context is {max}; shorten it or set ContextOverflow = TruncateLeft.");
            embeds = embeds.narrow(0, t - (max - 1), max - 1);
            t = max - 1;
        }
        return new EncodedPrompt(embeds.contiguous().MoveToOuterDisposeScope(), (int)t, shown);
    }

    /// <summary>Visual features [N, Dv] (float32) of images through the model's visual encoder.</summary>
    public Tensor EncodeImages(IReadOnlyList<GillImageInput> images) => EncodeImages(images, new Stopwatch());

    private Tensor EncodeImages(IReadOnlyList<GillImageInput> images, Stopwatch visualTime)
    {
        if (VisualEncoder is null) throw new InvalidOperationException("The prompt has an image but the GILL model has no visual encoder.");
        var bitmaps = new List<SKBitmap>();
        visualTime.Start();
        try
        {
            foreach (var img in images) bitmaps.Add(img.Decode());
            var enc = VisualEncoder.Encode(bitmaps, includeEmbedding: false);
            if (enc.FeatureSize != Core.Config.VisualHiddenSize || enc.Count != images.Count)
                throw new InvalidOperationException($"The visual encoder returned [{enc.Count}, {enc.FeatureSize}] for {images.Count} image(s); expected width {Core.Config.VisualHiddenSize}.");
            return torch.tensor(enc.Features, new long[] { enc.Count, enc.FeatureSize }).to(Core.Device);
        }
        finally
        {
            foreach (var b in bitmaps) b.Dispose();
            visualTime.Stop();
        }
    }

    // ---------------------------------------------------------------- retrieval-augmented context

    private List<GillPromptPart> RetrieveContext(GillPrompt prompt, GillGenerationOptions options, Stopwatch visualTime, Stopwatch lmTime, Stopwatch retrievalTime)
    {
        var memory = ContextMemory ?? throw new InvalidOperationException("ContextExamples > 0 needs a context memory (GillModel contextMemory / the folder's 'memory' entry).");
        using var scope = torch.NewDisposeScope();
        // The query: the prompt followed by the [IMG] group, read as a retrieval query (text-only pass, as retrieval mode).
        var queryPrompt = EncodePrompt(prompt.Parts, new GillGenerationOptions { ContextOverflow = GillContextOverflow.TruncateLeft, AlwaysAddBos = options.AlwaysAddBos }, visualTime, lmTime, 0);
        lmTime.Start();
        var imgIds = torch.tensor(Core.ImgTokenIds.Select(i => (long)i).ToArray(), new long[] { 1, Core.ImgTokenIds.Count });
        var seq = torch.cat(new[] { queryPrompt.Embeddings.unsqueeze(0), Core.EmbedTokens(imgIds) }, 1);
        int r = Core.ImgTokenIds.Count;
        if (seq.shape[1] > ContextLength) seq = seq.narrow(1, seq.shape[1] - ContextLength, ContextLength);
        var hidden = Core.LastHiddenState(seq);
        var states = hidden.narrow(1, hidden.shape[1] - r, r).to(ScalarType.Float32);
        var query = Core.TextRetrievalEmbedding(states)[0];
        lmTime.Stop();
        queryPrompt.Embeddings.Dispose();

        retrievalTime.Start();
        int want = options.ContextExamples;
        var hits = memory.Index.Search(query, (int)Math.Min(memory.Index.Count, want * 4 + 8))[0];
        var chosen = new List<(GillRetrievalHit Hit, Tensor Vec)>();
        foreach (var hit in hits)
        {
            if (chosen.Count == want) break;
            if (hit.Score > options.ContextDedupThreshold) continue;
            var v = memory.Index.GetVector(hit.Index);
            if (chosen.Any(c => torch.dot(c.Vec, v).item<float>() > options.ContextDedupThreshold)) continue;
            if (!memory.Captions.ContainsKey(hit.Id)) continue;
            chosen.Add((hit, v));
        }
        retrievalTime.Stop();
        LastContextIds = chosen.Select(c => c.Hit.Id).ToList();
        var parts = new List<GillPromptPart>();
        foreach (var (hit, _) in chosen)
        {
            parts.Add(new GillTextInput(memory.Captions[hit.Id]));
            parts.Add(GillImageInput.FromFile(memory.Resolve(hit.Id)));
        }
        return parts;
    }

    /// <summary>Ids of the in-context examples chosen for the most recent prompt with <see cref="GillGenerationOptions.ContextExamples"/> &gt; 0.</summary>
    public IReadOnlyList<string> LastContextIds { get; private set; } = Array.Empty<string>();

    // ---------------------------------------------------------------- decoding

    private sealed class DecodedRow
    {
        public List<int> Tokens { get; } = new();
        public List<Tensor> Hidden { get; } = new(); // float32 [D] per generated token whose pass ran
    }

    private List<DecodedRow> Decode(IReadOnlyList<EncodedPrompt> prompts, GillGenerationOptions o, CancellationToken ct)
    {
        var lm = Core.LanguageModel;
        var device = Core.Device;
        int b = prompts.Count;
        int tMax = prompts.Max(p => p.Length);
        int d = lm.Info.InputEmbeddingSize;
        int r = Core.ImgTokenIds.Count;
        long img0 = Core.ImgTokenIds[0];
        var imgIds = Core.ImgTokenIds.Select(i => (long)i).ToArray();
        int eos = lm.Info.EosTokenId ?? Tokenizer.EosTokenId;
        var newline = o.StopAtNewline ? NewlineTokenIds() : null;
        var rows = Enumerable.Range(0, b).Select(_ => new DecodedRow()).ToList();
        var sampled = new int[b];
        var pending = new int[b]; // next [IMG] index to force, 0 = none
        var images = new int[b];
        var finished = Enumerable.Repeat(o.MaxNewTokens == 0, b).ToArray();
        var lengths = prompts.Select(p => p.Length).ToArray();

        // Columns that are never output: the "<|image|>" marker and rows beyond the tokenizer (OPT pads its matrix).
        var never = new List<long>();
        if (Tokenizer.TryGetTokenId(GillTokenizer.ImageToken, out int imageMarker) && imageMarker < Core.VocabSize && !imgIds.Contains(imageMarker)) never.Add(imageMarker);
        for (int id = Tokenizer.Count; id < Core.VocabSize; id++) if (!imgIds.Contains(id)) never.Add(id);
        using var neverIds = never.Count > 0 ? torch.tensor(never.ToArray(), device: device) : null;
        using var generator = o.Temperature > 0 && o.Seed is long seed ? new Generator((ulong)seed, device) : null;
        using var cache = o.UseCache ? new KVCache(lm.Info.NumLayers) : null;

        // Left-padded prompt embeddings and mask (owned here).
        Tensor promptEmbeds, mask;
        using (var s = torch.NewDisposeScope())
        {
            var rowsE = new List<Tensor>();
            var rowsM = new List<Tensor>();
            foreach (var p in prompts)
            {
                int pad = tMax - p.Length;
                var e = p.Embeddings.to(lm.DType).to(device);
                rowsE.Add(pad == 0 ? e : torch.cat(new[] { torch.zeros(pad, d, lm.DType, device), e }, 0));
                rowsM.Add(torch.cat(new[] { torch.zeros(pad, ScalarType.Int64, device), torch.ones(p.Length, ScalarType.Int64, device) }, 0));
            }
            promptEmbeds = torch.stack(rowsE, 0).DetachFromDisposeScope();
            mask = torch.stack(rowsM, 0).DetachFromDisposeScope();
        }
        Tensor? generatedEmbeds = null; // [B, n, D] without cache
        Tensor? lastEmbeds = null;      // [B, 1, D] with cache
        try
        {
            for (int step = 0; ; step++)
            {
                ct.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                Tensor input = step == 0 ? promptEmbeds
                    : cache is not null ? lastEmbeds!
                    : torch.cat(new[] { promptEmbeds, generatedEmbeds! }, 1);
                var output = lm.Forward(new CausalLMInput
                {
                    InputsEmbeds = input,
                    AttentionMask = mask,
                    Cache = cache,
                    ComputeLogits = false,
                });
                var hLast = output.LastHiddenState.select(1, -1).to(ScalarType.Float32); // [B, D]
                if (step > 0)
                {
                    for (int i = 0; i < b; i++)
                        if (rows[i].Hidden.Count < rows[i].Tokens.Count)
                            rows[i].Hidden.Add(hLast[i].clone().DetachFromDisposeScope());
                }
                bool anyActive = false;
                for (int i = 0; i < b; i++) anyActive |= !finished[i];
                if (!anyActive) break;

                var logits = Core.Logits(hLast); // [B, V] float32
                var rowMaskImg0 = new bool[b];
                for (int i = 0; i < b; i++)
                    rowMaskImg0[i] = sampled[i] < o.MinTokensBeforeImage || images[i] >= o.MaxImages
                        || lengths[i] + rows[i].Tokens.Count + r > ContextLength;
                // [IMG1..r-1] are never sampled; [IMG0] is masked before the minimum, or scaled.
                if (r > 1) logits.IndexFillInPlace(1, torch.tensor(imgIds.Skip(1).ToArray(), device: device), float.NegativeInfinity);
                if (neverIds is not null) logits.IndexFillInPlace(1, neverIds, float.NegativeInfinity);
                if (o.ImageTokenScaleFactor > 1)
                {
                    var col = logits.narrow(1, img0, 1);
                    col.copy_(col.abs() * o.ImageTokenScaleFactor);
                }
                var maskRows = Enumerable.Range(0, b).Where(i => rowMaskImg0[i]).Select(i => (long)i).ToArray();
                if (maskRows.Length > 0)
                {
                    var col = logits.narrow(1, img0, 1);
                    col.IndexFillInPlace(0, torch.tensor(maskRows, device: device), float.NegativeInfinity);
                }
                var next = Pick(logits, o, generator).cpu().data<long>().ToArray();

                var chosen = new long[b];
                var fed = new long[b];
                for (int i = 0; i < b; i++)
                {
                    if (finished[i]) { chosen[i] = Core.PadTokenId; continue; }
                    fed[i] = 1;
                    long tok;
                    if (pending[i] > 0)
                    {
                        tok = imgIds[pending[i]];
                        pending[i] = pending[i] + 1 == r ? 0 : pending[i] + 1;
                    }
                    else
                    {
                        tok = next[i];
                        sampled[i]++;
                        o.TokenCallback?.Invoke(i, (int)tok);
                        if (tok == img0)
                        {
                            images[i]++;
                            if (r > 1) pending[i] = 1;
                        }
                    }
                    chosen[i] = tok;
                    rows[i].Tokens.Add((int)tok);
                    bool stop = pending[i] == 0 && (
                        (o.StopAtEos && tok == eos)
                        || (newline is not null && newline.Contains((int)tok))
                        || sampled[i] >= o.MaxNewTokens
                        || lengths[i] + rows[i].Tokens.Count >= ContextLength);
                    if (stop) finished[i] = true;
                }

                var chosenT = torch.tensor(chosen, new long[] { b, 1 }, device: device);
                var emb = Core.EmbedTokens(chosenT).to(lm.DType); // [B, 1, D]
                // Rows that had already finished get a masked pad (their positions do not advance).
                var newMask = torch.cat(new[] { mask, torch.tensor(fed, new long[] { b, 1 }, device: device) }, 1).DetachFromDisposeScope();
                mask.Dispose();
                mask = newMask;
                if (cache is not null)
                {
                    lastEmbeds?.Dispose();
                    lastEmbeds = emb.DetachFromDisposeScope();
                }
                else
                {
                    var g = generatedEmbeds is null ? emb : torch.cat(new[] { generatedEmbeds, emb }, 1);
                    g = g.DetachFromDisposeScope();
                    generatedEmbeds?.Dispose();
                    generatedEmbeds = g;
                }
                // One more pass is only needed when some row's last token is an [IMG] token whose state is still missing.
                bool allDone = finished.All(f => f);
                if (allDone && !rows.Any(row => row.Tokens.Count > 0 && imgIds.Contains(row.Tokens[^1]))) break;
            }
        }
        finally
        {
            promptEmbeds.Dispose();
            mask.Dispose();
            generatedEmbeds?.Dispose();
            lastEmbeds?.Dispose();
        }
        return rows;
    }

    private static Tensor Pick(Tensor logits, GillGenerationOptions o, Generator? generator)
    {
        if (o.Temperature == 0) return logits.argmax(-1);
        logits = logits / o.Temperature;
        if (o.TopP < 1.0)
        {
            var (sorted, order) = logits.sort(-1, descending: true);
            var probs = torch.softmax(sorted, -1);
            var before = probs.cumsum(-1) - probs;
            var removeSorted = before >= o.TopP;
            var remove = torch.zeros_like(removeSorted).scatter(1, order, removeSorted);
            logits = logits.MaskedFill(remove, double.NegativeInfinity);
        }
        return torch.softmax(logits, -1).multinomial(1, generator: generator).squeeze(1);
    }

    private HashSet<int> NewlineTokenIds()
    {
        if (_newlineIds is not null) return _newlineIds;
        var set = new HashSet<int>();
        for (int id = 0; id < Core.FrozenVocabSize && id < Tokenizer.Count; id++)
        {
            string text;
            try { text = Tokenizer.Decode(new[] { id }); }
            catch (ArgumentException) { continue; }
            if (text.Contains('\n')) set.Add(id);
        }
        return _newlineIds = set;
    }

    // ---------------------------------------------------------------- post-processing

    private GillGenerationResult PostProcess(GillPrompt prompt, DecodedRow row, int promptLength, GillGenerationOptions o,
        TimeSpan visual, TimeSpan lm, Stopwatch total, CancellationToken ct)
    {
        var retrievalTime = new Stopwatch();
        var generationTime = new Stopwatch();
        int r = Core.ImgTokenIds.Count;
        var imgIds = Core.ImgTokenIds;
        int eos = Core.LanguageModel.Info.EosTokenId ?? Tokenizer.EosTokenId;
        var parts = new List<GillOutputPart>();
        var groups = new List<GillImageGroup>();
        int generatorCalls = 0;
        var exclude = new HashSet<long>();
        foreach (var id in (o.ExcludeGalleryIds ?? Array.Empty<string>()).Concat(ShownIds(prompt)))
            if (GalleryRow(id) is long rowIndex) exclude.Add(rowIndex);

        var segment = new List<int>();
        int pos = 0;
        var tokens = row.Tokens;
        while (pos < tokens.Count)
        {
            bool isGroup = tokens[pos] == imgIds[0] && pos + r <= tokens.Count && row.Hidden.Count >= pos + r
                && Enumerable.Range(0, r).All(j => tokens[pos + j] == imgIds[j]);
            if (!isGroup)
            {
                int tok = tokens[pos];
                if (!imgIds.Contains(tok) && !(o.StopAtEos && tok == eos)) segment.Add(tok);
                pos++;
                continue;
            }
            var text = DecodeText(segment);
            if (o.TextTruncation == GillTextTruncation.FirstSentence) text = FirstSentence(text);
            if (text.Length > 0) parts.Add(new GillTextOutput(text));
            segment.Clear();
            ct.ThrowIfCancellationRequested();
            var group = ProcessGroup(groups.Count, pos, row.Hidden.GetRange(pos, r), o, exclude, parts, retrievalTime, generationTime, ref generatorCalls);
            groups.Add(group);
            pos += r;
        }
        if (o.TextTruncation == GillTextTruncation.None || groups.Count == 0)
        {
            var tail = DecodeText(segment);
            if (o.TextTruncation == GillTextTruncation.FirstSentence) tail = FirstSentence(tail);
            if (tail.Length > 0) parts.Add(new GillTextOutput(tail));
        }
        foreach (var h in row.Hidden) h.Dispose();
        var timings = new GillTimings(visual, lm, retrievalTime.Elapsed, generationTime.Elapsed, total.Elapsed);
        return new GillGenerationResult(parts, groups, tokens.ToArray(), promptLength, timings, generatorCalls);
    }

    private string DecodeText(List<int> ids) => ids.Count == 0 ? "" : Tokenizer.Decode(ids, skipSpecialTokens: true);

    internal static string FirstSentence(string text)
    {
        int cut = text.IndexOfAny(new[] { '.', '\n' });
        return cut < 0 ? text : text[..(text[cut] == '.' ? cut + 1 : cut)];
    }

    private static IEnumerable<string> ShownIds(GillPrompt prompt) =>
        prompt.Parts.OfType<GillImageInput>().Select(p => p.GalleryId ?? p.Path).Where(s => s is not null)!;

    private long? GalleryRow(string id)
    {
        if (Gallery is null) return null;
        if (_galleryIds is null)
        {
            var map = new Dictionary<string, long>(StringComparer.Ordinal);
            for (long i = 0; i < Gallery.Count; i++) map.TryAdd(Gallery.GetId(i), i);
            _galleryIds = map;
        }
        return _galleryIds.TryGetValue(id, out var row) ? row : null;
    }

    private GillImageGroup ProcessGroup(int groupIndex, int tokenPos, List<Tensor> hiddenRows, GillGenerationOptions o, HashSet<long> exclude,
        List<GillOutputPart> parts, Stopwatch retrievalTime, Stopwatch generationTime, ref int generatorCalls)
    {
        using var scope = torch.NewDisposeScope();
        var hidden = torch.stack(hiddenRows, 0).unsqueeze(0).to(Core.Device); // [1, r, D]
        var retEmb = Core.TextRetrievalEmbedding(hidden); // [1, p]

        IReadOnlyList<GillRetrievalHit> hits = Array.Empty<GillRetrievalHit>();
        double? maxScore = null;
        if (Gallery is not null)
        {
            retrievalTime.Start();
            hits = Gallery.Search(retEmb, o.RetrievalTopK, exclude)[0];
            retrievalTime.Stop();
            if (hits.Count > 0) maxScore = hits[0].Score;
        }

        GillImageDecision decision;
        double pRet;
        GillDecisionSource source;
        switch (o.DecisionMode)
        {
            case GillDecisionMode.AlwaysRetrieve:
                if (Gallery is null) throw new InvalidOperationException("DecisionMode AlwaysRetrieve needs a retrieval gallery; the GILL model has none.");
                (decision, pRet, source) = (GillImageDecision.Retrieve, 1, GillDecisionSource.Fixed);
                break;
            case GillDecisionMode.AlwaysGenerate:
                if (ImageGenerator is null) throw new InvalidOperationException("DecisionMode AlwaysGenerate needs an image generator; the GILL model has none.");
                (decision, pRet, source) = (GillImageDecision.Generate, 0, GillDecisionSource.Fixed);
                break;
            default:
                if (Gallery is null || hits.Count == 0) (decision, pRet, source) = (GillImageDecision.Generate, 0, GillDecisionSource.Fixed);
                else if (ImageGenerator is null) (decision, pRet, source) = (GillImageDecision.Retrieve, 1, GillDecisionSource.Fixed);
                else if (DecisionClassifier is not null)
                {
                    var h0 = hidden.select(1, 0).to(DecisionClassifier.Device);
                    Tensor? ms = DecisionClassifier.Kind == GillDecisionKind.PaperWithMaxScore
                        ? torch.tensor(new[] { (float)maxScore!.Value }, device: DecisionClassifier.Device) : null;
                    pRet = DecisionClassifier.RetrieveProbability(h0, ms)[0].item<float>();
                    decision = pRet > 0.5 ? GillImageDecision.Retrieve : GillImageDecision.Generate;
                    source = GillDecisionSource.Classifier;
                }
                else
                {
                    bool ret = maxScore!.Value >= o.RetrievalScoreThreshold;
                    (decision, pRet, source) = (ret ? GillImageDecision.Retrieve : GillImageDecision.Generate, ret ? 1 : 0, GillDecisionSource.Threshold);
                }
                break;
        }

        if (decision == GillImageDecision.Retrieve)
        {
            for (int i = 0; i < hits.Count; i++)
            {
                parts.Add(new GillRetrievedImageOutput(groupIndex, hits[i].Index, hits[i].Id, hits[i].Score, i));
                if (i == 0) exclude.Add(hits[i].Index);
            }
        }
        else if (ImageGenerator is not null)
        {
            generationTime.Start();
            var genEmb = Core.GenerationEmbedding(hidden); // [1, L, m]
            int want = ImageGenerator.ConditioningShape.SequenceLength;
            if (genEmb.shape[1] < want)
                genEmb = torch.cat(new[] { genEmb, torch.zeros(1, want - genEmb.shape[1], genEmb.shape[2], genEmb.dtype, genEmb.device) }, 1);
            var baseOptions = o.ImageGeneration;
            long? seed = baseOptions.Seed is long s0 ? s0 + groupIndex : null;
            var genOptions = new ImageGenerationOptions
            {
                Seed = seed,
                Steps = baseOptions.Steps,
                GuidanceScale = baseOptions.GuidanceScale,
                NegativeEmbeddings = baseOptions.NegativeEmbeddings,
                Height = baseOptions.Height,
                Width = baseOptions.Width,
                Scheduler = baseOptions.Scheduler,
            };
            using var images = ImageGenerator.Generate(genEmb, genOptions);
            generatorCalls++;
            var img = images[0].detach().to(ScalarType.Float32).cpu().clone().DetachFromDisposeScope();
            parts.Add(new GillGeneratedImageOutput(groupIndex, seed, img));
            generationTime.Stop();
        }

        return new GillImageGroup(groupIndex, tokenPos, decision, pRet, 1 - pRet, maxScore, source,
            hidden[0].cpu().contiguous().data<float>().ToArray(), retEmb[0].cpu().contiguous().data<float>().ToArray());
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (!_owns) return;
        Gallery?.Dispose();
        if (ContextMemory is not null && !ReferenceEquals(ContextMemory.Index, Gallery)) ContextMemory.Index.Dispose();
        DecisionClassifier?.Dispose();
        ImageGenerator?.Dispose();
        (VisualEncoder as IDisposable)?.Dispose();
        Core.Dispose();
    }
}
