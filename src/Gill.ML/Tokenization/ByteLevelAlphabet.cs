using System.Text;

namespace Gill.ML.Tokenization;

/// <summary>
/// The reversible byte-to-character alphabet of byte-level BPE vocabularies (GPT-2, OPT, CLIP): printable Latin-1
/// bytes stand for themselves, every other byte is shifted to a printable code point above U+00FF so that no
/// vocabulary entry contains whitespace or control characters.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] s_byteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> s_charToByte = BuildCharToByte();

    /// <summary>The 256 alphabet characters indexed by byte.</summary>
    public static IReadOnlyList<char> Characters => s_byteToChar;

    /// <summary>The 256 alphabet characters in the order CLIP's vocabulary lists them (printable bytes first, then the
    /// shifted ones), which is ascending character order: "!" is id 0 and "a" id 64.</summary>
    public static IReadOnlyList<char> CharactersInVocabularyOrder { get; } = s_byteToChar.Order().ToArray();

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + shifted++);
        }
        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++)
        {
            map[s_byteToChar[b]] = (byte)b;
        }
        return map;
    }

    /// <summary>Maps the UTF-8 bytes of <paramref name="text"/> to alphabet characters.</summary>
    public static string Encode(string text) => Encode(Encoding.UTF8.GetBytes(text));

    /// <summary>Maps raw bytes to alphabet characters.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes)
        {
            sb.Append(s_byteToChar[b]);
        }
        return sb.ToString();
    }

    /// <summary>Appends the bytes that the alphabet characters of <paramref name="token"/> stand for; false when a
    /// character is not part of the alphabet.</summary>
    public static bool TryAppendBytes(string token, List<byte> destination)
    {
        foreach (char c in token)
        {
            if (!s_charToByte.TryGetValue(c, out byte b))
            {
                return false;
            }
            destination.Add(b);
        }
        return true;
    }
}
