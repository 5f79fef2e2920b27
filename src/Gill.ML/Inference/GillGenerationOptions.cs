using Gill.ML.Generation;

namespace Gill.ML.Inference;

/// <summary>How the retrieve-or-generate decision is made for each [IMG] group.</summary>
public enum GillDecisionMode
{
    /// <summary>
    /// The trained decision classifier when the model has one; otherwise retrieve when the best retrieval score reaches
    /// <see cref="GillGenerationOptions.RetrievalScoreThreshold"/>. Without a gallery the decision is always generate
    /// (as in the original); without a generator it falls back to retrieve.
    /// </summary>
    Auto,

    /// <summary>Always retrieve from the gallery (needs one).</summary>
    AlwaysRetrieve,

    /// <summary>Always generate with the image generator (needs one).</summary>
    AlwaysGenerate,
}

/// <summary>What happens when a prompt is longer than the language model's context.</summary>
public enum GillContextOverflow
{
    /// <summary>Throw an <see cref="ArgumentException"/> naming the lengths.</summary>
    Error,

    /// <summary>Drop the oldest positions (left truncation), keeping room for at least one new token.</summary>
    TruncateLeft,
}

/// <summary>How generated text is post-processed.</summary>
public enum GillTextTruncation
{
    /// <summary>Keep all text (default; text is never cut mid-sentence).</summary>
    None,

    /// <summary>
    /// The original's behaviour: the text before each image is cut at its first period or newline and text after the
    /// last image is dropped.
    /// </summary>
    FirstSentence,
}

/// <summary>Options of <see cref="GillModel.Generate"/>.</summary>
public sealed class GillGenerationOptions
{
    /// <summary>Maximum number of sampled tokens (forced [IMG1..r−1] tokens are not counted).</summary>
    public int MaxNewTokens { get; set; } = 32;

    /// <summary>0 = greedy (argmax); &gt; 0 = sample from softmax(logits / temperature).</summary>
    public double Temperature { get; set; }

    /// <summary>Nucleus mass when sampling (the token that crosses the threshold is kept). Must be 1 when greedy.</summary>
    public double TopP { get; set; } = 1.0;

    /// <summary>Seed of the sampling generator (same seed, same tokens).</summary>
    public long? Seed { get; set; }

    /// <summary>[IMG0] cannot be produced before this many sampled tokens (the original's <c>min_word_tokens</c>).</summary>
    public int MinTokensBeforeImage { get; set; }

    /// <summary>
    /// When &gt; 1, the [IMG0] logit becomes |logit| × factor (the original's <c>ret_scale_factor</c> /
    /// <c>gen_scale_factor</c>; 1.3–1.4 in the demos, 1e5 forces an image).
    /// </summary>
    public double ImageTokenScaleFactor { get; set; } = 1.0;

    /// <summary>Maximum number of [IMG] groups per output; after that [IMG0] is masked. 0 gives text-only answers (captioning, QA).</summary>
    public int MaxImages { get; set; } = 1;

    /// <summary>Add BOS to every text part, not only the first.</summary>
    public bool AlwaysAddBos { get; set; }

    /// <summary>Stop a row at the EOS token (the original never stops early and always runs MaxNewTokens steps).</summary>
    public bool StopAtEos { get; set; } = true;

    /// <summary>Stop a row after a token containing a newline (the original truncates its output at the first newline).</summary>
    public bool StopAtNewline { get; set; }

    /// <summary>Text post-processing; <see cref="GillTextTruncation.FirstSentence"/> reproduces the original.</summary>
    public GillTextTruncation TextTruncation { get; set; } = GillTextTruncation.None;

    /// <summary>Use the KV cache (same tokens and [IMG] states as recomputing the whole sequence each step).</summary>
    public bool UseCache { get; set; } = true;

    /// <summary>What to do with prompts longer than the context.</summary>
    public GillContextOverflow ContextOverflow { get; set; } = GillContextOverflow.Error;

    /// <summary>Retrieve-or-generate policy.</summary>
    public GillDecisionMode DecisionMode { get; set; } = GillDecisionMode.Auto;

    /// <summary>Without a decision classifier, retrieve when the best cosine score is at least this.</summary>
    public double RetrievalScoreThreshold { get; set; } = 0.5;

    /// <summary>Number of retrieved images reported per [IMG] group (the original fetches 3).</summary>
    public int RetrievalTopK { get; set; } = 3;

    /// <summary>Gallery ids never to retrieve (e.g. images already shown earlier in the conversation).</summary>
    public IReadOnlyCollection<string>? ExcludeGalleryIds { get; set; }

    /// <summary>Options of the image generator (seed, steps, guidance). The seed of group i is <c>Seed + i</c>.</summary>
    public ImageGenerationOptions ImageGeneration { get; set; } = new() { Seed = 1337 };

    /// <summary>Retrieval-augmented context (RA-CM3): K (caption, image) pairs from the model's memory placed before the prompt; 0 = off.</summary>
    public int ContextExamples { get; set; }

    /// <summary>Candidates whose cosine similarity to the query or to an already chosen example exceeds this are skipped.</summary>
    public double ContextDedupThreshold { get; set; } = 0.9;

    /// <summary>Called with (row, token id) for each sampled token as it is chosen (for streaming); forced [IMG] tokens are not reported.</summary>
    public Action<int, int>? TokenCallback { get; set; }

    /// <summary>Checks every value.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "Must be non-negative.");
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Must be ≥ 0.");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "Must be in (0, 1].");
        if (Temperature == 0 && TopP != 1) throw new ArgumentException("Greedy decoding (Temperature 0) requires TopP 1, as in the original.", nameof(TopP));
        if (MinTokensBeforeImage < 0) throw new ArgumentOutOfRangeException(nameof(MinTokensBeforeImage), MinTokensBeforeImage, "Must be non-negative.");
        if (!(ImageTokenScaleFactor > 0)) throw new ArgumentOutOfRangeException(nameof(ImageTokenScaleFactor), ImageTokenScaleFactor, "Must be positive.");
        if (MaxImages < 0) throw new ArgumentOutOfRangeException(nameof(MaxImages), MaxImages, "Must be non-negative.");
        if (RetrievalTopK <= 0) throw new ArgumentOutOfRangeException(nameof(RetrievalTopK), RetrievalTopK, "Must be positive.");
        if (ContextExamples < 0) throw new ArgumentOutOfRangeException(nameof(ContextExamples), ContextExamples, "Must be non-negative.");
        ArgumentNullException.ThrowIfNull(ImageGeneration);
    }
}
